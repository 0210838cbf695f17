"""Faults an operator meets, each made for real: against a real `lpa serve` process where only a process has
the fault (a client's socket going away, a client trickling its body, SIGTERM), in process otherwise (a model
that raises), and on a small filesystem the test mounts (a full disk while fetching a model or writing an engine).

A corrupt model file (its entry ERROR with the reason, the others serving) is in test_server.py
(TestLoadStates.test_corrupt_model_is_error_while_others_serve).
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from litestar.testing import TestClient
from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

from appliance.atomic import sha256_file
from appliance.catalog import load_catalog
from appliance.config import load_node
from appliance.engines import cache as engine_cache
from appliance.engines.cache import EngineCache
from appliance.engines.plan import EngineKey, GpuTarget, PlannedEngine, Profile
from appliance.fetch import FetchError, fetch_models
from appliance.modelstore import ModelStore
from appliance.runtime import Runtime
from appliance.serve import GRACEFUL_SHUTDOWN_S
from appliance.server.app import create_app
from appliance.server.drain import DRAIN_TIMEOUT_S
from tests.helpers import (
    REPO,
    ServedWorker,
    assert_contract_response,
    golivepeer_multipart,
    png_bytes,
    write_node,
    write_style_manifest,
)

UPSCALE = "/m/upscale/waifu2x-upconv7/upscale"
ROUTE = "upscale:waifu2x-upconv7:upscale"  # the route's metrics label
BODY_TIMEOUT_S = 1.0
HEADER_TIMEOUT_S = 1.0


# --- a real worker: disconnects, a slow upload, SIGTERM -------------------------------------------------------


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[ServedWorker]:
    """One upscaler with one slot and one queue place; the SIGTERM test, last in this file, stops it."""
    served = ServedWorker(
        tmp_path_factory.mktemp("faults"),
        model_dir,
        [{"model": "waifu2x-upconv7", "capability": "upscale", "capacity": 1, "queue": 1}],
        intra_op_threads=1,
        body_timeout_seconds=BODY_TIMEOUT_S,
        header_timeout_seconds=HEADER_TIMEOUT_S,
    )
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()


def _upscale_request(size: int, request_id: str) -> tuple[bytes, bytes]:
    """(head, body) of an upscale as go-livepeer sends it, as raw HTTP/1.1 bytes for a socket of our own."""
    body, content_type = golivepeer_multipart({"prompt": "x"}, "image", png_bytes(size, size))
    head = (
        f"POST {UPSCALE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\n\r\n"
    ).encode()
    return head, body


def _post_upscale(url: str, size: int = 16, client: httpx.Client | None = None) -> httpx.Response:
    body, content_type = golivepeer_multipart({"prompt": "x"}, "image", png_bytes(size, size))
    post = client.post if client is not None else httpx.post
    return post(f"{url}{UPSCALE}", content=body, headers={"Content-Type": content_type}, timeout=120)


def _slots(worker: ServedWorker) -> tuple[int, int]:
    """(inferences running, requests waiting) of the upscaler, as /models reports them."""
    model = httpx.get(f"{worker.url}/models", timeout=10).json()[0]
    return model["in_flight"], model["waiting"]


def _until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` (another process's state: there is no event to wait on) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _access(worker: ServedWorker, request_id: str) -> dict[str, Any]:
    """The request's access-log record: written when its handler has returned."""
    return worker.wait_for_log(lambda r: r.get("event") == "request" and r.get("request_id") == request_id)


def _errors(worker: ServedWorker, reason: str) -> float:
    sample = f'lpa_errors_total{{reason="{reason}",route="{ROUTE}"}} '
    text = httpx.get(f"{worker.url}/metrics", timeout=10).text
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample)), 0.0)


def _serves_with_no_slot_held(worker: ServedWorker) -> None:
    assert _slots(worker) == (0, 0)
    assert 'lpa_in_flight{model="upscale/waifu2x-upconv7"} 0.0' in httpx.get(f"{worker.url}/metrics").text
    response = _post_upscale(worker.url)
    assert response.status_code == 200, response.text


@pytest.mark.e2e
def test_client_gone_mid_upload_holds_nothing_and_is_not_counted_as_a_500(worker: ServedWorker) -> None:
    head, body = _upscale_request(256, "gone-mid-upload")
    with socket.create_connection(("127.0.0.1", worker.port)) as sock:
        sock.sendall(head + body[: len(body) // 3])
    # The body is read before a slot is taken: the worker answers (to nobody) and counts the client's doing.
    assert _access(worker, "gone-mid-upload")["status"] == 400
    assert _errors(worker, "client_disconnected") >= 1
    assert _errors(worker, "http_500") == 0
    _serves_with_no_slot_held(worker)


@pytest.mark.e2e
def test_client_gone_mid_inference_frees_the_slot_when_the_inference_ends(worker: ServedWorker) -> None:
    head, body = _upscale_request(320, "gone-mid-inference")  # about a second of waifu2x on one thread
    sock = socket.create_connection(("127.0.0.1", worker.port))
    try:
        sock.sendall(head + body)
        _until(lambda: _slots(worker) == (1, 0), "the inference to start")
    finally:
        sock.close()
    # The slot is the inference's, not the client's: held until the model's thread is done, then freed.
    assert _slots(worker) == (1, 0)
    assert _access(worker, "gone-mid-inference")["status"] == 200  # the answer nobody reads
    _serves_with_no_slot_held(worker)


@pytest.mark.e2e
def test_slow_upload_is_cut_by_the_body_timeout_and_holds_no_slot(worker: ServedWorker) -> None:
    head, body = _upscale_request(64, "slow-upload")
    slots_seen: set[tuple[int, int]] = set()
    answer, sent, served_meanwhile = b"", 0, None
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", worker.port)) as sock:
        sock.sendall(head)
        while True:  # 16 bytes every 50 ms, never the last one: ~300 B/s, the whole body would take a minute
            assert time.monotonic() - started < BODY_TIMEOUT_S + 10, "the slow upload was never cut"
            readable, _, _ = select.select([sock], [], [], 0.05)
            try:
                if readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
                    continue
                sock.sendall(body[sent : min(sent + 16, len(body) - 1)])
                sent += 16
            except (ConnectionResetError, BrokenPipeError):
                break  # cut with a reset: a closed connection is an answer too
            slots_seen.add(_slots(worker))
            if served_meanwhile is None:  # the one slot is free for others while the body trickles
                served_meanwhile = _post_upscale(worker.url).status_code
    elapsed = time.monotonic() - started
    assert BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + 10
    assert slots_seen == {(0, 0)} and served_meanwhile == 200
    if answer:  # the answer, when it got there before the close: a 400 that says why, and the close
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"connection: close" in answer.lower()
        assert b"did not arrive within 1 s" in answer and b"worker.body_timeout_seconds" in answer
    assert _access(worker, "slow-upload")["status"] == 400
    assert _errors(worker, "body_timeout") == 1
    _serves_with_no_slot_held(worker)


def _closed_by_worker_after(sock: socket.socket, send: list[bytes], interval: float) -> float:
    """Send ``send``'s pieces ``interval`` seconds apart, then wait; seconds until the worker closed ``sock``."""
    started = time.monotonic()
    try:
        for piece in send:
            sock.sendall(piece)
            time.sleep(interval)
        sock.settimeout(HEADER_TIMEOUT_S + 10)
        assert sock.recv(65536) == b"", "the worker answered instead of closing"
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while we were still sending
    return time.monotonic() - started


@pytest.mark.e2e
def test_silent_and_trickling_connections_are_closed_at_the_header_deadline(worker: ServedWorker) -> None:
    head, _ = _upscale_request(16, "trickled-head")
    with socket.create_connection(("127.0.0.1", worker.port)) as silent:
        assert HEADER_TIMEOUT_S <= _closed_by_worker_after(silent, [], 0) < HEADER_TIMEOUT_S + 5
    with socket.create_connection(("127.0.0.1", worker.port)) as trickling:  # half its head, byte by byte
        pieces = [head[i : i + 1] for i in range(len(head) // 2)]
        closed_in = _closed_by_worker_after(trickling, pieces, 2 * HEADER_TIMEOUT_S / len(pieces))
        assert HEADER_TIMEOUT_S <= closed_in < 2 * HEADER_TIMEOUT_S + 5
    with socket.create_connection(("127.0.0.1", worker.port)) as kept:  # a request, then silence after it
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_response(kept)[1] == b'{"status":"OK"}'
        time.sleep(HEADER_TIMEOUT_S / 2)  # a new head in time is served on the same connection
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_response(kept)[1] == b'{"status":"OK"}'
        assert _closed_by_worker_after(kept, [b"GET /hea"], 0) < HEADER_TIMEOUT_S + 5
    closed = [r for r in worker.records() if r.get("event") == "connection closed: no complete request head in time"]
    assert len(closed) == 3
    _serves_with_no_slot_held(worker)


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one HTTP/1.1 response with a Content-Length, read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before the response's head: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed in the middle of the response's body"
        body += chunk
    return head, body


@pytest.mark.e2e
def test_busy_refusal_comes_before_the_upload_is_parsed_and_keeps_the_connection(worker: ServedWorker) -> None:
    """With every slot and queue place taken, a request is refused as busy without its form being parsed (a
    malformed 4 MiB form gets the busy answer, not a 422), its body is still read to the end, so the answer
    arrives instead of a reset, and the same connection serves the next request."""
    results: dict[str, int] = {}

    def send(name: str) -> None:
        results[name] = _post_upscale(worker.url, 320).status_code

    senders = {name: threading.Thread(target=send, args=(name,)) for name in ("running", "queued")}
    senders["running"].start()
    _until(lambda: _slots(worker) == (1, 0), "the first inference to start")
    senders["queued"].start()
    _until(lambda: _slots(worker) == (1, 1), "the second request to queue")
    body = b"not a multipart form at all " * (4 * 1024 * 1024 // 28)
    head = (
        f"POST {UPSCALE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-ID: busy-early\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", worker.port), timeout=30) as sock:
        sock.sendall(head + body)
        refused_head, refused = _read_response(sock)
        assert refused_head.startswith(b"HTTP/1.1 500 "), refused_head
        assert refused == b'{"detail":{"msg":"insufficient capacity: all slots and queue places are busy"}}'
        assert b"connection: close" not in refused_head.lower()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # the same connection, still in step
        health_head, health = _read_response(sock)
        assert health_head.startswith(b"HTTP/1.1 200 ") and health == b'{"status":"OK"}'
    for sender in senders.values():
        sender.join()
    assert results == {"running": 200, "queued": 200}
    assert _access(worker, "busy-early")["status"] == 500
    _serves_with_no_slot_held(worker)


def test_the_drain_fits_the_worker_units_stop_timeout() -> None:
    """systemd kills the worker TimeoutStopSec after SIGTERM: the drain, uvicorn's grace and the shutdown hooks
    (at least 5 s of margin) must fit."""
    with (REPO / "systemd" / "units.toml").open("rb") as handle:
        stop = tomllib.load(handle)["units"]["livepeer-worker@.service"]["Service"]["TimeoutStopSec"]
    assert stop.endswith("s")
    assert float(stop.removesuffix("s")) >= DRAIN_TIMEOUT_S + GRACEFUL_SHUTDOWN_S + 5


@pytest.mark.e2e
def test_sigterm_drains_in_flight_requests_refuses_new_ones_as_busy_and_exits_in_time(worker: ServedWorker) -> None:
    """Last in this file: it stops the module's worker."""
    results: dict[str, httpx.Response] = {}

    def send(name: str) -> None:
        results[name] = _post_upscale(worker.url, 320)

    senders = {name: threading.Thread(target=send, args=(name,)) for name in ("running", "queued")}
    senders["running"].start()
    _until(lambda: _slots(worker) == (1, 0), "the first inference to start")
    senders["queued"].start()
    _until(lambda: _slots(worker) == (1, 1), "the second request to queue")
    with httpx.Client(base_url=worker.url, timeout=60) as kept_alive:
        assert kept_alive.get("/health").status_code == 200  # a connection opened before the signal

        stopped_at = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait_for_log(lambda r: r.get("event") == "draining")["in_flight"] == 2

        # New requests, on a new connection and on the kept-alive one: busy, as go-livepeer can decode it.
        for client in (None, kept_alive):
            refused = _post_upscale(worker.url, client=client)
            assert refused.status_code == 500
            assert refused.json() == {"detail": {"msg": "insufficient capacity: the worker is shutting down"}}
            assert_contract_response("/upscale", "post", 500, refused.headers["content-type"], refused.json())
        assert kept_alive.get("/health").json() == {"status": "OK"}  # the worker-wide routes keep answering

    for sender in senders.values():
        sender.join()
    assert {name: r.status_code for name, r in results.items()} == {"running": 200, "queued": 200}
    code = worker.process.wait(timeout=45)
    stopped_in = time.monotonic() - stopped_at
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once shut down: a clean stop for systemd
    assert stopped_in < 45, f"stopped in {stopped_in:.1f} s, past the unit's TimeoutStopSec"
    records = worker.records()
    events = [r.get("event") for r in records]
    draining = events.index("draining")  # earlier tests in this file saw 500s of their own
    refused_at = [
        i for i, r in enumerate(records[draining:], draining) if r.get("event") == "request" and r["status"] == 500
    ]
    assert len(refused_at) == 2 and max(refused_at) < events.index("drained") < events.index("worker stopped")
    assert next(r for r in worker.records() if r.get("event") == "drained")["in_flight"] == 0


# --- a model that raises mid-inference (in process) ------------------------------------------------------------


class _FaultySession:
    """Stands in front of the real onnxruntime session; its first run does ``fault``, then it is the real one."""

    def __init__(self, real: Any, fault: Callable[[Any, Any], Any]) -> None:
        self.real, self.fault, self.faulted = real, fault, False

    def run(self, outputs: Any, feeds: Any) -> Any:
        if not self.faulted:
            self.faulted = True
            return self.fault(outputs, feeds)
        return self.real.run(outputs, feeds)


def _ort_error(_: Any, __: Any) -> Any:
    raise RuntimeException(
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv"
    )


def _garbage(_: Any, __: Any) -> Any:
    return [np.zeros(3, dtype=np.float32)]  # an output of the wrong rank: post-processing cannot use it


MODEL_FAULTS = [  # (description, what the session's first run does, how the 500's message starts)
    ("onnxruntime raises inside the graph", _ort_error, "model 'waifu2x-upconv7': inference failed: "),
    ("the model returns garbage and post-processing raises", _garbage, "model 'waifu2x-upconv7' failed: "),
]


@pytest.mark.parametrize(("description", "fault", "message"), MODEL_FAULTS, ids=[f[0] for f in MODEL_FAULTS])
def test_model_raising_mid_inference_is_a_500_with_a_message_and_the_next_request_succeeds(
    tmp_path: Path, model_dir: Path, description: str, fault: Callable[[Any, Any], Any], message: str
) -> None:
    node = write_node(
        tmp_path / "n.toml", model_dir=model_dir, models=[{"model": "waifu2x-upconv7", "capability": "upscale"}]
    )
    runtime = Runtime(load_node(node), load_catalog(REPO / "models"), allow_gpu=False)
    with TestClient(create_app(runtime, token=None, load_in_background=False)) as client:
        pipeline = runtime.entries[0].pipeline
        assert pipeline is not None
        pipeline.backend._session = _FaultySession(pipeline.backend._session, fault)  # type: ignore[attr-defined]
        body, content_type = golivepeer_multipart({"prompt": "x"}, "image", png_bytes(16, 16))
        failed = client.post(UPSCALE, content=body, headers={"Content-Type": content_type})
        assert failed.status_code == 500
        assert_contract_response("/upscale", "post", 500, failed.headers["content-type"], failed.json())
        assert failed.json()["detail"]["msg"].startswith(message), failed.json()
        assert "insufficient capacity" not in failed.json()["detail"]["msg"]  # not busy: the gateway must know
        assert client.post(UPSCALE, content=body, headers={"Content-Type": content_type}).status_code == 200
        model = client.get("/models").json()[0]
        assert (model["status"], model["in_flight"], model["waiting"]) == ("OK", 0, 0)
        assert f'lpa_errors_total{{reason="inference",route="{ROUTE}"}} 1.0' in client.get("/metrics").text


# --- a full disk (a tmpfs the test mounts) ---------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount a tmpfs of ``size`` bytes (root only; skipped, with the reason, where mounting is impossible)."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"small{len(mounted)}"
        point.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount(8) here: a full disk needs a small filesystem the test mounts")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a {size}-byte tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=True)


def _files(directory: Path, *, ignore: tuple[str, ...] = ()) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name not in ignore)


def _fill(directory: Path) -> None:
    """Take every free byte of ``directory``'s filesystem, as another process writing there would."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_full_disk_during_a_model_fetch_leaves_no_partial_file(small_fs: Callable[[int], Path], tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "big.onnx").write_bytes(np.random.default_rng(1).bytes(1 << 20))  # 1 MiB, onto 256 KiB
    description = "A model file larger than the disk it is fetched onto"
    write_style_manifest(catalog, "big", catalog / "big.onnx", description=description, size=64)
    models = small_fs(256 * 1024)
    with pytest.raises(FetchError, match=r"model 'big': .*No space left on device.*; nothing was installed"):
        fetch_models(load_catalog(catalog), ["big"], ModelStore(models), progress=False)
    assert _files(models) == []


ENGINE_DISKS = [  # (description, filesystem size, which of the cache's writes finds the disk full: None = none)
    ("no room for the builder's output", 128 * 1024, None),
    ("the disk fills before the engine is written into the cache", 4 << 20, 1),
    ("the disk fills between the engine and its record", 4 << 20, 2),
]


@pytest.mark.parametrize(("description", "size", "full_at_write"), ENGINE_DISKS, ids=[d[0] for d in ENGINE_DISKS])
def test_full_disk_during_an_engine_build_leaves_no_partial_file(
    small_fs: Callable[[int], Path],
    catalog_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    description: str,
    size: int,
    full_at_write: int | None,
) -> None:
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (dev dependency) builds engines without a GPU")
    onnx = catalog_dir / "tiny-style.onnx"  # one convolution: a real engine in well under a second
    key = EngineKey(
        onnx_sha256=sha256_file(onnx),
        gpu_name="NVIDIA L4",
        compute_capability="8.9",
        precision="fp32",
        profiles=(Profile("input1", (1, 3, 16, 16), (1, 3, 64, 64), (1, 3, 64, 64)),),
        hardware_compatibility="none",
        optimization_level=0,
        appliance_version="test",
    )
    engine = PlannedEngine("tiny-style", GpuTarget("NVIDIA L4", 8, 9), key)
    directory = small_fs(size)
    if full_at_write is not None:
        real_write, writes = engine_cache.write_bytes_atomically, []

        def write_on_a_filling_disk(path: Path, data: bytes, *, mode: int = 0o644) -> None:
            writes.append(path)
            if len(writes) == full_at_write:
                _fill(directory)
            real_write(path, data, mode=mode)

        monkeypatch.setattr(engine_cache, "write_bytes_atomically", write_on_a_filling_disk)
    cache = EngineCache(directory, flavour="tensorrt-rtx")
    result = cache.build(engine, onnx)
    assert result.outcome == "failed"
    assert "No space left on device" in result.reason, result.reason
    if full_at_write is not None:
        assert result.reason.startswith(f"could not write into {directory}: ")
    # Nothing half-written and no engine without its record: only the lock file (and our filler) remain.
    assert _files(directory, ignore=("filler",)) == [cache.path_for(engine).with_suffix(".lock").name]
    assert cache.refusal(engine) == "not built"
