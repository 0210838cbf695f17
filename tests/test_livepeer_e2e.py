"""End to end with the orchestrator double: render → worker → go-livepeer's start-up, jobs and BYOC."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.doubles.orchestrator import AIModelConfig, GoLivepeerPanic, Orchestrator, handshake, load_ai_models
from tests.helpers import GRACE_HOPPER, golivepeer_multipart, png_bytes

pytestmark = pytest.mark.e2e

SECRET = "orch-secret-for-tests"
TOKEN = "worker-token-for-tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _node(tmp: Path, model_dir: Path, byoc_url: str, port: int) -> Path:
    for name, value in (("token", TOKEN), ("secret", SECRET)):
        (tmp / name).write_text(value + "\n")
        (tmp / name).chmod(0o600)
    node = tmp / "node.toml"
    node.write_text(f"""
[worker]
listen = "127.0.0.1:{port}"
token_file = "{tmp / "token"}"
model_dir = "{model_dir}"
intra_op_threads = 1
[[models]]
model = "waifu2x-upconv7"
capability = "upscale"
capacity = 1
queue = 1
[[models]]
model = "ppocr-v4-det"
capability = "depth"
[orchestrator]
orch_secret_file = "{tmp / "secret"}"
byoc_url = "{byoc_url}"
byoc_interval_seconds = 1.0
config_dir = "{tmp / "rendered"}"
[[pricing]]
capability = "upscale"
unit = "frame"
width = 512
height = 512
price = "0.0005"
currency = "USD"
[[pricing]]
capability = "depth"
unit = "second"
price = "0.001"
currency = "USD"
""")
    return node


@pytest.fixture(scope="module")
def wired(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path
) -> Iterator[tuple[Orchestrator, subprocess.Popen[str], Path]]:
    tmp = tmp_path_factory.mktemp("wired")
    orchestrator = Orchestrator([], orch_secret=SECRET)
    orchestrator.serve()
    node = _node(tmp, model_dir, orchestrator.url, _free_port())
    lpa = [sys.executable, "-m", "appliance.cli"]
    rendered = subprocess.run([*lpa, "render", "--node", str(node)], capture_output=True, text=True, check=False)
    assert rendered.returncode == 0, rendered.stderr
    orchestrator.entries = load_ai_models(tmp / "rendered" / "aiModels.json")
    log = (tmp / "worker.log").open("w")
    worker = subprocess.Popen(
        [*lpa, "serve", "--node", str(node)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield orchestrator, worker, tmp / "worker.log"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()
        orchestrator.close()


def _upscaler(orchestrator: Orchestrator) -> AIModelConfig:
    return next(e for e in orchestrator.entries if e.pipeline == "upscale")


def _loaded(entry: AIModelConfig) -> None:
    """go-livepeer takes LOADING as ready, and a job sent meanwhile is answered busy: wait for OK before jobs."""

    def ok() -> bool:
        answer = httpx.get(f"{entry.url}/health", headers={"Authorization": f"Bearer {entry.token}"}, timeout=5)
        return bool(answer.json()["status"] == "OK")

    _wait(ok, 60, f"{entry.model_id} to load")


def test_handshake_jobs_byoc_and_reregistration(wired: tuple[Orchestrator, subprocess.Popen[str], Path]) -> None:
    orchestrator, _, _ = wired
    for entry in orchestrator.entries:
        handshake(entry)
        assert entry.version_ok, f"/version of {entry.model_id} does not echo its entry"
    entry = _upscaler(orchestrator)
    assert entry.token == TOKEN and entry.price_per_unit is not None and entry.pixels_per_unit == 512 * 512
    _loaded(entry)

    photo = io.BytesIO()
    Image.open(GRACE_HOPPER).convert("RGB").resize((96, 112)).save(photo, format="JPEG")
    status, body = orchestrator.upscale(entry, photo.getvalue(), seed=3)
    assert status == 200 and body["images"][0]["seed"] == 3
    assert body["images"][0]["url"].startswith("data:image/png;base64,")

    # BYOC: the worker registered depth with its price; a job forwarded by the orchestrator is served.
    _wait(lambda: "depth" in orchestrator.registrations, 30, "the depth registration")
    registration = orchestrator.registrations["depth"]
    assert (registration["price_per_unit"], registration["price_scaling"], registration["currency"]) == (1, 1000, "USD")
    job = httpx.post(
        f"{orchestrator.url}/process/request/depth",
        content=png_bytes(64, 48),
        timeout=60,
        headers={"X-Double-Capability": "depth", "Content-Type": "image/png", "Accept": "image/png"},
    )
    assert job.status_code == 200 and job.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(job.content)).size == (64, 48)

    # The orchestrator forgets it (a restart): the worker registers again within its 1 s timer.
    orchestrator.registrations.clear()
    _wait(lambda: "depth" in orchestrator.registrations, 5, "re-registration")


def test_saturated_model_answers_only_insufficient_capacity(
    wired: tuple[Orchestrator, subprocess.Popen[str], Path],
) -> None:
    """Flooding past the orchestrator's own limit: every answer is 200 or 500 'insufficient capacity'."""
    orchestrator, _, _ = wired
    entry = _upscaler(orchestrator)
    handshake(entry)
    _loaded(entry)
    image = png_bytes(128, 128)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: orchestrator.upscale(entry, image, respect_capacity=False), range(12)))
    statuses = sorted(status for status, _ in answers)
    assert 200 in statuses and 500 in statuses, statuses
    for status, body in answers:
        assert status == 200 or "insufficient capacity" in body["detail"]["msg"], body


def test_clean_shutdown_unregisters_before_draining(wired: tuple[Orchestrator, subprocess.Popen[str], Path]) -> None:
    """SIGTERM withdraws the BYOC registration when the drain starts, while a job is still running, so the
    orchestrator stops sending jobs the draining worker would refuse; the running job still gets its answer."""
    orchestrator, worker, log_path = wired
    _wait(lambda: "depth" in orchestrator.registrations, 30, "the depth registration")
    entry = _upscaler(orchestrator)
    _loaded(entry)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def upscale_in_flight() -> bool:
        models = httpx.get(f"{entry.url.split('/m/')[0]}/models", headers=auth, timeout=5).json()
        return any(m["capability"] == "upscale" and m["in_flight"] == 1 for m in models)

    body, content_type = golivepeer_multipart({"prompt": "x"}, "image", png_bytes(320, 320))  # ~1 s, one thread
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(
            httpx.post,
            f"{entry.url}/upscale",
            content=body,
            headers={**auth, "Content-Type": content_type, "X-Request-ID": "last-job"},
            timeout=60,
        )
        _wait(upscale_in_flight, 30, "the upscale job to start")
        worker.send_signal(signal.SIGTERM)
        assert job.result().status_code == 200
    assert worker.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "depth" in orchestrator.unregistered and "depth" not in orchestrator.registrations
    records = [_json_or_empty(line) for line in log_path.read_text().splitlines()]
    events = [record.get("event") for record in records]
    last_job = next(i for i, r in enumerate(records) if r.get("request_id") == "last-job" and r["event"] == "request")
    assert events.index("draining") <= events.index("BYOC capability unregistered") < last_job < events.index("drained")


def _json_or_empty(line: str) -> dict[str, object]:
    try:
        parsed = json.loads(line)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def test_double_fails_loudly_on_a_quoted_price(tmp_path: Path) -> None:
    path = tmp_path / "aiModels.json"
    path.write_text('[{"pipeline": "upscale", "model_id": "m", "price_per_unit": "0.5e-2USD", "pixels_per_unit": 1}]')
    with pytest.raises(GoLivepeerPanic, match=r"big\.Rat\.SetString fails"):
        load_ai_models(path)
