"""What a newcomer meets first: the worker's index at ``/``, a 404 that names what is served, the serve banner,
and a clear error when the port is taken."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from appliance import __version__
from tests.conftest import AppFactory
from tests.helpers import write_node

REPO = Path(__file__).parents[1]
TOKEN = "first-contact-token"
ENTRIES = [
    {"model": "waifu2x-upconv7", "capability": "upscale"},
    {"model": "u2netp", "capability": "segmentation"},
]


def _served(client: TestClient[Any], **headers: str) -> list[tuple[str, str, str, str]]:
    return [
        (e["capability"], e["model_id"], e["base_path"], e["inference"])
        for e in client.get("/", headers=headers).json()["entries"]
    ]


def test_the_index_names_the_version_the_entries_and_where_to_look(make_client: AppFactory) -> None:
    client = make_client(ENTRIES)
    index = client.get("/").json()
    assert index["version"] == __version__
    assert _served(client) == [
        ("upscale", "waifu2x-upconv7", "/m/upscale/waifu2x-upconv7", "POST /m/upscale/waifu2x-upconv7/upscale"),
        ("segmentation", "u2netp", "/m/segmentation/u2netp", "POST /m/segmentation/u2netp/segmentation"),
    ]
    assert [e["status"] for e in index["entries"]] == ["OK", "OK"]
    for link in index["links"].values():  # every link answers
        assert client.get(link).status_code == 200, link
    assert {"/models", "/openapi.json", "/metrics"} <= set(index["links"].values())
    assert "/" in client.get("/openapi.json").json()["paths"]


def test_a_404_under_m_names_the_served_entries(make_client: AppFactory) -> None:
    client = make_client(ENTRIES)
    for wrong in ("/m/upscale/waifu2x/upscale", "/m/depth/u2netp/depth", "/m/segmentation/u2netp/segment"):
        response = client.post(wrong)
        assert response.status_code == 404, wrong
        assert response.headers["content-type"] == "application/json"
        detail = response.json()["detail"]
        assert "/m/upscale/waifu2x-upconv7" in detail["msg"] and "/m/segmentation/u2netp" in detail["msg"]
        assert [(s["capability"], s["model_id"]) for s in detail["served"]] == [
            ("upscale", "waifu2x-upconv7"),
            ("segmentation", "u2netp"),
        ]
    elsewhere = client.get("/no/such/route")  # outside /m/: the plain answer
    assert elsewhere.status_code == 404 and "served" not in elsewhere.json()["detail"]


def test_with_a_token_only_its_holder_learns_the_entries(make_client: AppFactory) -> None:
    client = make_client(ENTRIES, token=TOKEN)
    anonymous = client.get("/m/upscale/nope/upscale")
    assert anonymous.status_code == 404
    assert anonymous.json() == {"detail": {"msg": "Not Found"}}
    holder = client.get("/m/upscale/nope/upscale", headers={"Authorization": f"Bearer {TOKEN}"})
    assert len(holder.json()["detail"]["served"]) == 2
    assert client.get("/").status_code == 401
    assert len(_served(client, Authorization=f"Bearer {TOKEN}")) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _lpa(*args: str) -> list[str]:
    return [sys.executable, "-m", "appliance.cli", *args]


@pytest.mark.e2e
def test_serve_prints_where_it_serves_and_a_curl_that_works(tmp_path: Path, model_dir: Path) -> None:
    port = _free_port()
    node = write_node(
        tmp_path / "node.toml", model_dir=model_dir, models=ENTRIES, listen=f"127.0.0.1:{port}", intra_op_threads=1
    )
    with subprocess.Popen(
        _lpa("serve", "--node", str(node), "--cpu-only"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as worker:
        try:
            lines = _stderr_until_banner(worker)
        finally:
            worker.terminate()
            worker.communicate(timeout=60)
    banner = next((line for line in lines if line.startswith("lpa serve:")), None)
    assert banner is not None, "".join(lines)
    base = f"http://127.0.0.1:{port}"
    assert f"{base}/m/upscale/waifu2x-upconv7" in banner and f"{base}/m/segmentation/u2netp" in banner
    events = [json.loads(line) for line in lines if line.startswith("{")]
    event = next(e for e in events if e.get("event") == "serving")
    assert event["address"] == base
    assert [e["url"] for e in event["entries"]] == [
        f"{base}/m/upscale/waifu2x-upconv7",
        f"{base}/m/segmentation/u2netp",
    ]
    curl = re.search(r"try: (curl .*)$", banner.strip())
    assert curl is not None, banner
    assert curl.group(1) == event["example"]


def _stderr_until_banner(worker: subprocess.Popen[str]) -> list[str]:
    """The worker's stderr lines up to its banner; also checks, while it serves, that the banner's curl works."""
    assert worker.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (line := worker.stderr.readline()):
        lines.append(line)
        if line.startswith("lpa serve:"):
            curl = re.search(r"try: (curl .*)$", line.strip())
            assert curl is not None, line
            done = subprocess.run(  # as a person pastes it into a shell, from the project root
                ["/bin/sh", "-c", curl.group(1)], capture_output=True, timeout=120, check=False, cwd=REPO
            )
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["images"][0]["url"].startswith("data:image/png;base64,")
            address = re.search(r"models on (http://\S+):", line)
            assert address is not None
            assert httpx.get(f"{address.group(1)}/health", timeout=5).json() == {"status": "OK"}
            break
    return lines


@pytest.mark.e2e
def test_a_port_in_use_is_one_clear_line_before_any_model_loads(tmp_path: Path, model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = write_node(tmp_path / "node.toml", model_dir=model_dir, models=ENTRIES)
        started = time.monotonic()
        result = subprocess.run(
            _lpa("serve", "--node", str(node), "--listen", f"127.0.0.1:{port}"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [f"lpa: error: cannot listen on 127.0.0.1:{port}: the address is already in use"], errors
    assert elapsed < 30


@pytest.mark.parametrize("spelling", ["--help", "help"])
def test_dev_help_lists_lpa_commands_too(spelling: str) -> None:
    shown = subprocess.run([REPO / "dev", spelling], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "./dev serve" in shown and "./dev test" in shown
    for command in ("serve", "fetch-models", "render", "check-gateway", "doctor", "engines"):
        assert re.search(rf"^\s+{command}\b", shown, re.MULTILINE), (command, shown)


def test_dev_serve_help_fetches_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    node = write_node(tmp_path / "node.toml", model_dir=models, models=ENTRIES)
    shown = subprocess.run(
        [REPO / "dev", "serve", "--node", str(node), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert shown.stdout.startswith("usage: lpa serve"), shown.stdout
    assert not models.exists(), "models were fetched for --help"
