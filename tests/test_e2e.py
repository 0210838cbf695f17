"""End to end: a real `lpa serve` process on loopback, real models, go-livepeer's start-up and requests."""

from __future__ import annotations

import base64
import io
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers import GRACE_HOPPER, ServedWorker, assert_contract_response, golivepeer_multipart

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token-0123456789"
ENTRIES = [
    {"model": "waifu2x-upconv7", "capability": "upscale", "model_id": "waifu2x/upconv7"},
    {"model": "u2netp", "capability": "segmentation"},
    {"model": "ppocr-v4-det", "capability": "depth"},
]


class Worker(ServedWorker):
    """The real worker, and a client that sends the token as go-livepeer does."""

    def __init__(self, directory: Path, model_dir: Path) -> None:
        token_file = directory / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        super().__init__(directory, model_dir, ENTRIES, token_file=str(token_file), intra_op_threads=2)
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Worker]:
    worker = Worker(tmp_path_factory.mktemp("e2e"), model_dir)
    try:
        yield worker
    finally:
        worker.client.close()
        worker.stop()


def _startup_statuses(worker: Worker) -> list[str]:
    """Poll /health as go-livepeer does at start-up (every 500 ms; here faster) until it is not LOADING."""
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            response = worker.client.get("/health")
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        assert response.headers["content-type"].startswith("application/json")
        seen.append(response.json()["status"])
        if seen[-1] != "LOADING":
            return seen
        time.sleep(0.05)
    pytest.fail(f"worker never became ready; log:\n{worker.log.read_text()}")


def test_startup_handshake_then_real_inference(worker: Worker) -> None:
    statuses = _startup_statuses(worker)
    assert statuses[-1] == "OK", statuses

    # go-livepeer's handshake per aiModels.json entry: /health, /hardware/info, /version under the entry's url.
    for entry in ENTRIES:
        model_id = entry.get("model_id", entry["model"])
        base = f"/m/{entry['capability']}/{model_id}"
        for route in ("/health", "/hardware/info", "/version"):
            response = worker.client.get(base + route)
            assert_contract_response(
                route, "get", response.status_code, response.headers["content-type"], response.json()
            )
        assert worker.client.get(base + "/version").json()["model_id"] == model_id
        assert worker.client.get(base + "/health", headers={"Authorization": "Bearer nope"}).status_code == 401

    photo = Image.open(GRACE_HOPPER).convert("RGB").resize((128, 150))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    body, content_type = golivepeer_multipart(
        {"prompt": "", "model_id": "waifu2x/upconv7", "seed": "7"}, "image", buffer.getvalue()
    )
    response = worker.client.post(
        "/m/upscale/waifu2x/upconv7/upscale", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    assert_contract_response("/upscale", "post", 200, response.headers["content-type"], response.json())
    url = response.json()["images"][0]["url"]
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (256, 300)

    raw = worker.client.post(
        "/m/segmentation/u2netp/segmentation?cutout=true",
        content=buffer.getvalue(),
        headers={"Content-Type": "image/png", "Accept": "image/png"},
    )
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(raw.content)).mode == "RGBA"

    depth = worker.client.post(
        "/m/depth/ppocr-v4-det/depth", content=buffer.getvalue(), headers={"Content-Type": "image/png"}
    )
    assert depth.status_code == 200
    depth_url = depth.json()["images"][0]["url"]
    assert Image.open(io.BytesIO(base64.b64decode(depth_url.split(",", 1)[1]))).mode.startswith("I;16")


def test_sigterm_exits_cleanly_and_logs_no_secret(worker: Worker) -> None:
    _startup_statuses(worker)
    worker.process.send_signal(signal.SIGTERM)
    # uvicorn drains, runs the shutdown hooks, then re-raises SIGTERM: systemd counts that as a clean exit.
    assert worker.process.wait(timeout=30) in (0, -signal.SIGTERM)
    lines = [line for line in worker.log.read_text().splitlines() if line.startswith("{")]
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]
    assert any(r.get("event") == "model ready" for r in records)
    assert records[-1]["event"] == "worker stopped", "shutdown hooks did not run"
    assert any(r.get("event") == "request" and r.get("status") == 401 for r in records)
    assert TOKEN not in worker.log.read_text()
