"""What the HTTP worker adds on top of the model: overhead per request, /health under saturation, throughput.

For each model and image size, alternately (one at a time, never overlapping):

1. in process, the model's pipeline as the server runs it, with a timing wrapper around the backend:
   ``raw`` = the backend's ``run`` (onnxruntime ``session.run``) alone, summed over the tiles of one image,
   ``pipeline`` = ``pipeline.process`` (pre-processing + run + post-processing),
   ``in-proc`` = PNG decode + ``pipeline.process`` + PNG encode (everything but HTTP);
2. end to end over loopback HTTP against a real ``lpa serve`` subprocess, sent as go-livepeer sends it
   (multipart, the image part as ``application/octet-stream``, JSON answer with a base64 data URL).

``HTTP - in-proc`` compares the medians of two processes; ``added`` is the HTTP time minus the worker's own
decode + pipeline + encode time for the same request (from ``/metrics``): what HTTP, multipart, base64 + JSON
and the thread hand-off cost, free of the model's run-to-run noise. ``HTTP / raw`` is the issue's literal
"overhead over the raw session". Verdicts are given at 512².

Then, with every model saturated (``capacity + queue`` requests in flight per model, continuously), a separate
process polls ``GET /health`` as fast as it can (p50/p99); finally requests per second at concurrency 1, 2 and
4 per model. Raw numbers and a machine description go to ``bench/results/worker_overhead.json``. Loopback
only; every phase is bounded by counts, timeouts and a global ``--max-seconds`` deadline.
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from harness import BenchError, back_to_back, bench_main, join_all, log, lpa_serve, node_file, percentile, tail
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from appliance.backends import create_backend
from appliance.catalog import Manifest, load_catalog
from appliance.config import WorkerSettings
from appliance.imaging import decode_image, encode_png
from appliance.modelstore import ModelFileError, ModelStore
from appliance.pipelines import create_pipeline
from appliance.resources import bundled_catalog_dir

DEFAULT_MODELS = ("waifu2x-upconv7", "u2netp", "ppocr-v4-det")
DEFAULT_SIZES = (256, 512)
CONCURRENCY = (1, 2, 4)
PHASES = ("overhead", "health", "throughput")
TARGET_SIZE = 512  # the targets are stated at 512²
OVERHEAD_MS, OVERHEAD_FRACTION = 5.0, 0.05  # HTTP overhead ≤ max(5 ms, 5 %)
HEALTH_P99_MS = 20.0
BUSY_TEXT = "insufficient capacity"
BUSY_BACKOFF_S = 0.05  # a client told "busy" waits this long before its next request, as a gateway would
DEFAULT_MODEL_DIR = Path("~/.cache/livepeer-appliance/models").expanduser()  # the node file's default
RESULTS = Path(__file__).resolve().parent / "results" / "worker_overhead.json"


# --- small helpers -----------------------------------------------------------------------------------------


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self, phase: str) -> None:
        if time.monotonic() > self.end:
            raise BenchError(f"--max-seconds {self.seconds:g} passed during {phase}; stopping")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ms(seconds: float) -> float:
    return seconds * 1000.0


def fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


# --- test images -------------------------------------------------------------------------------------------


def test_image(size: int, seed: int = 20240601) -> bytes:
    """A deterministic natural-ish scene: smooth gradients, a few shapes and some text, mild noise; PNG bytes.

    The scene is drawn in relative coordinates, so 256² and 512² show the same picture.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    sky = np.stack([0.35 + 0.4 * y, 0.55 + 0.3 * np.sin(3.0 * x + 1.0) * 0.5, 0.85 - 0.3 * y], axis=-1)
    image = Image.fromarray(np.clip(sky * 255, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    s = size
    draw.rectangle((0, int(0.72 * s), s, s), fill=(70, 110, 55))  # ground
    draw.ellipse((int(0.30 * s), int(0.28 * s), int(0.70 * s), int(0.80 * s)), fill=(200, 90, 60))  # subject
    draw.ellipse((int(0.42 * s), int(0.38 * s), int(0.50 * s), int(0.46 * s)), fill=(30, 30, 40))
    mountain = [(0.05, 0.72), (0.18, 0.40), (0.30, 0.72)]
    draw.polygon([(int(px * s), int(py * s)) for px, py in mountain], fill=(120, 120, 130))
    draw.rectangle((int(0.74 * s), int(0.50 * s), int(0.95 * s), int(0.72 * s)), fill=(230, 220, 200))
    font = _font(max(10, s // 18))
    draw.text((int(0.05 * s), int(0.06 * s)), "LIVEPEER 2x", fill=(20, 20, 20), font=font)
    draw.text((int(0.76 * s), int(0.56 * s)), "AI", fill=(40, 40, 160), font=font)
    image = image.filter(ImageFilter.GaussianBlur(radius=s / 512))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 4.0, (s, s, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


# --- in-process baseline -----------------------------------------------------------------------------------


class TimingBackend:
    """Wraps a backend with the same interface and records how long each ``run`` takes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: list[float] = []

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def input_names(self) -> Sequence[str]:
        return list(self.inner.input_names)

    @property
    def output_names(self) -> Sequence[str]:
        return list(self.inner.output_names)

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        started = time.perf_counter()
        try:
            return list(self.inner.run(feeds, outputs))
        finally:
            self.seconds.append(time.perf_counter() - started)


@dataclass
class Series:
    """The samples of one model at one size; in-process and HTTP samples are taken alternately."""

    raw_ms: list[float] = field(default_factory=list)  # backend.run, summed over the runs of one image
    pipeline_ms: list[float] = field(default_factory=list)  # pipeline.process
    inproc_ms: list[float] = field(default_factory=list)  # decode + process + encode
    http_ms: list[float] = field(default_factory=list)  # POST, answer read in full
    # The worker's own decode + pipeline + encode time for that same request (lpa_inference_seconds)
    server_ms: list[float] = field(default_factory=list)
    runs_per_image: int = 0


class InProcessModel:
    """The model as the server runs it, in this process, with the backend's ``run`` timed."""

    def __init__(self, manifest: Manifest, model_path: Path, *, intra_op_threads: int, allow_gpu: bool) -> None:
        choice = create_backend(model_path, intra_op_threads=intra_op_threads, allow_gpu=allow_gpu)
        self.backend_name = choice.backend.name
        self.backend = TimingBackend(choice.backend)
        self.pipeline = create_pipeline(manifest, self.backend)
        self.options = self.pipeline.options_type()

    def sample(self, data: bytes) -> tuple[float, float, float, int, bytes]:
        """(raw ms, pipeline ms, decode + pipeline + encode ms, backend runs, output PNG) for one image."""
        self.backend.seconds.clear()
        t0 = time.perf_counter()
        image = decode_image(data, max_pixels=1 << 26)
        t1 = time.perf_counter()
        output = self.pipeline.process(image, self.options)
        t2 = time.perf_counter()
        png = encode_png(output)
        t3 = time.perf_counter()
        runs = self.backend.seconds
        return ms(sum(runs)), ms(t2 - t1), ms(t3 - t0), len(runs), png


# --- the server --------------------------------------------------------------------------------------------


def node_toml(models: Sequence[str], args: argparse.Namespace, listen: str) -> str:
    worker = {
        "listen": listen,
        "model_dir": args.model_dir,
        "intra_op_threads": args.intra_op_threads,
        "inference_niceness": args.inference_niceness,
        "log_level": args.log_level,
    }
    served = {"capacity": args.capacity, "queue": args.queue, "warm": True}
    return node_file(worker, [{"model": n, "capability": CATALOG.get(n).capability, **served} for n in models])


def server_post_mortem(process: subprocess.Popen[bytes], server_log: Path, output: Path) -> str:
    """What the server said before things went wrong; its whole log is kept next to the results."""
    kept = output.with_suffix(".server.log")
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(server_log.read_bytes())
    state = "still running" if process.poll() is None else f"exited with {process.returncode}"
    return f"lpa serve (pid {process.pid}) {state}; full log: {kept}\n{tail(server_log)}"


# --- HTTP requests -----------------------------------------------------------------------------------------


def route(name: str) -> str:
    capability = CATALOG.get(name).capability
    action = "upscale" if capability == "upscale" else capability
    return f"/m/{capability}/{name}/{action}"


def try_post(client: httpx.Client, name: str, png: bytes) -> httpx.Response | None:
    """``post_image`` for load generators: a transport error gives None (after a short pause), not a raise."""
    try:
        return post_image(client, name, png)
    except httpx.HTTPError:
        time.sleep(0.05)
        return None


def post_image(client: httpx.Client, name: str, png: bytes) -> httpx.Response:
    """One inference request, shaped as go-livepeer sends it; the body is read in full."""
    files = {"image": ("image.png", png, "application/octet-stream")}
    data = {"prompt": "upscale"} if CATALOG.get(name).capability == "upscale" else {}
    return client.post(route(name), files=files, data=data)


def is_busy(response: httpx.Response) -> bool:
    return response.status_code == 500 and BUSY_TEXT in response.text


def output_of(response: httpx.Response) -> Image.Image:
    url = response.json()["images"][0]["url"]
    prefix = "data:image/png;base64,"
    if not url.startswith(prefix):
        raise BenchError(f"unexpected image URL {url[:40]!r}")
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


def check_output(name: str, size: int, response: httpx.Response, expected_png: bytes) -> dict[str, Any]:
    """The HTTP answer is the image the in-process pipeline produced (size, and pixels up to rounding)."""
    if response.status_code != 200:
        raise BenchError(f"{name} {size}²: HTTP {response.status_code}: {response.text[:300]}")
    got = np.asarray(output_of(response)).astype(np.int64)
    want = np.asarray(Image.open(io.BytesIO(expected_png))).astype(np.int64)
    if got.shape != want.shape:
        raise BenchError(f"{name} {size}²: HTTP answer is {got.shape}, in-process output is {want.shape}")
    return {"shape": list(got.shape), "max_abs_diff": int(np.abs(got - want).max())}


def http_sample(client: httpx.Client, name: str, size: int, png: bytes) -> tuple[float, httpx.Response]:
    """One timed request (until the whole answer is read); anything but 200 stops the benchmark."""
    started = time.perf_counter()
    response = post_image(client, name, png)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise BenchError(f"{name} {size}²: HTTP {response.status_code}: {response.text[:300]}")
    return ms(elapsed), response


# --- /health under saturation ------------------------------------------------------------------------------


@dataclass
class LoadCounts:
    ok: int = 0
    busy: int = 0
    other: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, response: httpx.Response | None) -> None:
        """Count one answer; after a busy answer, back off briefly instead of hammering the worker."""
        busy = response is not None and is_busy(response)
        with self.lock:
            if response is None:  # a transport error (timeout, reset): counted, never raised
                self.other += 1
            elif response.status_code == 200:
                self.ok += 1
            elif busy:
                self.busy += 1
            else:
                self.other += 1
        if busy:
            time.sleep(BUSY_BACKOFF_S)


@dataclass
class LoadClient:
    """One client that keeps exactly one request of one model in flight until told to stop."""

    base_url: str
    name: str
    png: bytes
    timeout: float
    counts: LoadCounts
    stop: threading.Event
    connected: threading.Event = field(default_factory=threading.Event)

    def loop(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout, trust_env=False) as client:
            self.connected.set()
            while not self.stop.is_set():
                self.counts.add(try_post(client, self.name, self.png))


_METRIC = re.compile(
    r"^lpa_(in_flight|queued|inference_seconds_sum|inference_seconds_count)"
    r'\{model="([^"]+)"\} ([0-9.e+-]+)$'
)


def server_metrics(client: httpx.Client, pattern: re.Pattern[str] = _METRIC) -> dict[str, dict[str, float]]:
    """Per-model samples from the worker's /metrics, {metric: {model label: value}}: the lines ``pattern`` matches,
    its groups the metric, the model label and the value (by default: gauges and inference-time sums)."""
    found: dict[str, dict[str, float]] = {}
    for line in client.get("/metrics").text.splitlines():
        if match := pattern.match(line):
            found.setdefault(match.group(1), {})[match.group(2)] = float(match.group(3))
    return found


def label(name: str) -> str:
    """The worker's metrics label of a served model: ``<capability>/<model_id>``."""
    return f"{CATALOG.get(name).capability}/{name}"


@dataclass
class HealthProbe:
    """Sequential ``GET /health`` on one keep-alive connection, as fast as the answers come."""

    samples: list[float] = field(default_factory=list)
    not_ok: int = 0

    def poll(self, base_url: str, seconds: float, timeout: float) -> None:
        with httpx.Client(base_url=base_url, timeout=timeout, trust_env=False) as client:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                started = time.perf_counter()
                try:
                    response = client.get("/health")
                    ok = response.status_code == 200 and response.json().get("status") == "OK"
                except (httpx.HTTPError, ValueError):
                    ok = False
                self.samples.append(ms(time.perf_counter() - started))
                self.not_ok += not ok


def start_probe(base_url: str, args: argparse.Namespace, output: Path) -> subprocess.Popen[bytes]:
    """The /health prober, in a process of its own: the load threads here must not slow its client down.

    It writes its samples to ``output`` (a file, not a pipe: thousands of samples overflow a pipe's buffer
    while this side waits for the prober to exit).
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--probe-health", base_url, "--output", str(output)]
    command += ["--health-seconds", str(args.health_seconds), "--request-timeout", str(args.request_timeout)]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def probe_result(process: subprocess.Popen[bytes], output: Path) -> HealthProbe:
    process.wait(timeout=30)
    if process.returncode != 0:
        raise BenchError(f"the /health prober exited with {process.returncode}")
    found = json.loads(output.read_text(encoding="utf-8"))
    return HealthProbe(samples=found["samples"], not_ok=found["not_ok"])


def probe_main(base_url: str, seconds: float, timeout: float, output: Path) -> int:
    """``--probe-health``: poll, then write the samples as JSON to ``output``."""
    probe = HealthProbe()
    probe.poll(base_url, seconds, timeout)
    output.write_text(json.dumps({"samples": probe.samples, "not_ok": probe.not_ok}), encoding="utf-8")
    return 0


def health_under_saturation(
    base_url: str, models: Sequence[str], png: bytes, *, args: argparse.Namespace, server_log: Path
) -> dict[str, Any]:
    """Poll /health while ``capacity + queue`` clients per model keep every slot busy and every queue full."""
    per_model = args.capacity + args.queue
    stop_event = threading.Event()
    counts = {name: LoadCounts() for name in models}
    clients = [
        LoadClient(base_url, name, png, args.request_timeout, counts[name], stop_event)
        for name in models
        for _ in range(per_model)
    ]
    threads = [threading.Thread(target=c.loop, daemon=True) for c in clients]
    for thread, load_client in zip(threads, clients, strict=True):
        thread.start()
        load_client.connected.wait(10)
    gauges: list[dict[str, dict[str, float]]] = []
    try:
        with httpx.Client(base_url=base_url, timeout=5.0, trust_env=False) as client:
            time.sleep(args.settle)  # every request admitted: each model's slots are running, its queue full
            log_offset = server_log.stat().st_size
            before, t_before = server_metrics(client), time.perf_counter()
            probe_file = server_log.with_name("health-probe.json")
            poller = start_probe(base_url, args, probe_file)
            give_up = time.monotonic() + args.health_seconds + args.request_timeout + 30
            while poller.poll() is None:
                if time.monotonic() > give_up:
                    poller.kill()
                    raise BenchError("the /health prober did not finish in time")
                time.sleep(1.0)
                gauges.append(server_metrics(client))
            window = time.perf_counter() - t_before
            after = gauges[-1] if gauges else server_metrics(client)
            probe = probe_result(poller, probe_file)
    finally:
        stop_event.set()  # the clients finish the request they have in flight, then stop
    join_all(threads, args.request_timeout)
    server_ms = health_durations(server_log, log_offset)
    return {
        "prober": "separate process, one keep-alive connection, sequential GETs",
        "image_size": args.health_size,
        "in_flight_per_model_requested": per_model,
        "seconds": args.health_seconds,
        "count": len(probe.samples),
        "not_ok": probe.not_ok,
        "p50_ms": percentile(probe.samples, 50),
        "p99_ms": percentile(probe.samples, 99),
        "max_ms": max(probe.samples, default=math.nan),
        "server_side_count": len(server_ms),
        "server_side_p50_ms": percentile(server_ms, 50),
        "server_side_p99_ms": percentile(server_ms, 99),
        "slot_busy_fraction": {
            name: busy_fraction(before, after, label(name), window, args.capacity) for name in models
        },
        "min_in_flight_gauge": {
            name: min((g.get("in_flight", {}).get(label(name), 0.0) for g in gauges), default=math.nan)
            for name in models
        },
        "metrics_samples": gauges,
        "load_answers": {name: {"ok": c.ok, "busy": c.busy, "other": c.other} for name, c in counts.items()},
        "samples_ms": probe.samples,
    }


def busy_fraction(
    before: Mapping[str, Mapping[str, float]],
    after: Mapping[str, Mapping[str, float]],
    model: str,
    window: float,
    capacity: int,
) -> float:
    """Inference seconds completed in the window per slot-second: about 1.0 when the slots never idle.

    Counted at completion, so a request straddling an edge of the window moves it by up to one inference time.
    """
    key = "inference_seconds_sum"
    done = after.get(key, {}).get(model, 0.0) - before.get(key, {}).get(model, 0.0)
    return done / (window * capacity)


def health_durations(server_log: Path, offset: int) -> list[float]:
    """Server-side ``duration_ms`` of the GET /health access-log lines written after ``offset``."""
    durations: list[float] = []
    with server_log.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if line.get("path") == "/health" and "duration_ms" in line:
                durations.append(float(line["duration_ms"]))
    return durations


# --- throughput --------------------------------------------------------------------------------------------


def throughput(base_url: str, name: str, png: bytes, concurrency: int, *, args: argparse.Namespace) -> dict[str, Any]:
    """``concurrency`` clients send back to back for ``--throughput-seconds`` and at least
    ``--throughput-min-requests`` requests; the requests still in flight then are finished and counted."""
    lock = threading.Lock()
    counts = LoadCounts()
    latencies: list[float] = []

    def record(response: httpx.Response | None, seconds: float) -> None:
        counts.add(response)
        if response is not None and response.status_code == 200:
            with lock:
                latencies.append(ms(seconds))

    elapsed = back_to_back(
        base_url,
        lambda client: try_post(client, name, png),
        record,
        concurrency=concurrency,
        seconds=args.throughput_seconds,
        min_requests=args.throughput_min_requests,
        max_seconds=args.throughput_max_seconds,
        request_timeout=args.request_timeout,
    )
    answered = counts.ok + counts.busy + counts.other
    return {
        "model": name,
        "concurrency": concurrency,
        "image_size": args.throughput_size,
        "requests": answered,
        "ok": counts.ok,
        "busy": counts.busy,
        "other": counts.other,
        "seconds": elapsed,
        "ok_per_s": counts.ok / elapsed,
        "answers_per_s": answered / elapsed,
        "latency_p50_ms": percentile(latencies, 50),
    }


# --- reporting ---------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import onnxruntime as ort  # noqa: PLC0415 (only for its version)

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "numpy": np.__version__,
        "pillow": Image.__version__,
        "httpx": httpx.__version__,
        "git_commit": git_commit(),
    }


def cpu_busy_fraction(seconds: float = 1.0) -> float:
    """Share of all cores' time spent busy over ``seconds`` (/proc/stat); NaN where there is no /proc."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text(encoding="utf-8").split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return math.nan
    total = total1 - total0
    return 1.0 - (idle1 - idle0) / total if total else math.nan


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def overhead_row(name: str, size: int, series: Series) -> dict[str, Any]:
    raw, pipe, full, http = (
        median(series.raw_ms),
        median(series.pipeline_ms),
        median(series.inproc_ms),
        median(series.http_ms),
    )
    paired = [h - i for h, i in zip(series.http_ms, series.inproc_ms, strict=True)]
    added = [h - w for h, w in zip(series.http_ms, series.server_ms, strict=True) if not math.isnan(w)]
    row: dict[str, Any] = {
        "model": name,
        "size": size,
        "runs_per_image": series.runs_per_image,
        "raw_run_ms": raw,
        "pipeline_ms": pipe,
        "inproc_ms": full,
        "http_ms": http,
        "server_inference_ms": median([w for w in series.server_ms if not math.isnan(w)]),
        "added_same_request_ms": median(added),
        "http_minus_inproc_ms": http - full,
        "paired_http_minus_inproc_ms": median(paired),
        "http_minus_raw_ms": http - raw,
        "http_over_inproc": http / full,
        "http_over_raw": http / raw,
    }
    if size == TARGET_SIZE:
        allowed = max(OVERHEAD_MS, OVERHEAD_FRACTION * full)
        row["allowed_ms"] = allowed
        row["allowed_vs_raw_ms"] = max(OVERHEAD_MS, OVERHEAD_FRACTION * raw)
        row["pass_added"] = row["added_same_request_ms"] <= allowed
        row["pass_vs_inproc"] = row["http_minus_inproc_ms"] <= allowed
        row["pass_vs_raw"] = row["http_minus_raw_ms"] <= row["allowed_vs_raw_ms"]
    return row


def verdict(row: Mapping[str, Any], key: str) -> str:
    if key not in row:
        return "n/a"
    return "PASS" if row[key] else "FAIL"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:  # first column left-aligned, numbers right-aligned
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in pairs)

    print(f"\n{title}")
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def print_report(report: Mapping[str, Any]) -> None:
    m = report["machine"]
    print(
        f"\nworker overhead benchmark: {m['cpu']}, {m['usable_cores']} cores, python {m['python']}, "
        f"onnxruntime {m['onnxruntime']} ({report['backend']}), "
        f"intra_op_threads={report['intra_op_threads']}, inference_niceness={report['inference_niceness']}, "
        f"repeat={report['repeat']} (+{report['warmup']} warm-up), medians"
    )
    print(
        f"CPU busy before the run: {fmt(100 * report['cpu_busy_before_run'], 0)}% "
        f"(load average {report['load_average_before_run'][0]:.2f}); "
        f"in-process and HTTP samples alternate, never overlap"
    )
    print_table(
        f"Per-request time (ms, medians). Target at {TARGET_SIZE}²: HTTP overhead <= max({OVERHEAD_MS:g} ms, "
        f"{OVERHEAD_FRACTION:.0%} of the baseline)",
        [
            "model",
            "size",
            "runs",
            "raw run",
            "pipeline",
            "in-proc",
            "HTTP",
            "HTTP-inproc",
            "HTTP/inproc",
            "HTTP/raw",
            "added",
            "allowed",
            "verdict(added)",
            "verdict(diff)",
            "verdict(raw)",
        ],
        [
            [
                r["model"],
                f"{r['size']}²",
                str(r["runs_per_image"]),
                fmt(r["raw_run_ms"]),
                fmt(r["pipeline_ms"]),
                fmt(r["inproc_ms"]),
                fmt(r["http_ms"]),
                fmt(r["http_minus_inproc_ms"]),
                fmt(r["http_over_inproc"], 3),
                fmt(r["http_over_raw"], 3),
                fmt(r["added_same_request_ms"]),
                fmt(r.get("allowed_ms", math.nan)),
                verdict(r, "pass_added"),
                verdict(r, "pass_vs_inproc"),
                verdict(r, "pass_vs_raw"),
            ]
            for r in report["overhead"]
        ],
    )
    print(
        "  raw run: session.run alone (summed over `runs` tiles); pipeline: pre + run + post; in-proc: PNG decode +\n"
        "  pipeline + PNG encode in this process; HTTP: the same image through lpa serve, go-livepeer style.\n"
        "  added: median over requests of HTTP time minus the worker's own decode + pipeline + encode time for that\n"
        "  request (lpa_inference_seconds): what HTTP, multipart, base64/JSON and the thread hand-off cost, free of\n"
        "  the model's run-to-run noise. verdict(added) and verdict(diff) (= HTTP-inproc, two processes' medians)\n"
        "  judge against `allowed` = max(5 ms, 5% of in-proc); verdict(raw) = HTTP - raw run <= max(5 ms, 5% of raw),\n"
        "  the issue's literal reading, which also charges the pipeline's own pre/post-processing and PNG work."
    )
    if report["health"] is not None:
        print_health(report["health"])
    print_table(
        f"Throughput ({report['throughput_size']}², capacity {report['capacity']}, queue {report['queue']}; "
        f"ok/s counts 200s only, busy = 500 '{BUSY_TEXT}')",
        ["model", "conc", "requests", "ok", "busy", "other", "seconds", "ok/s", "p50 ms"],
        [
            [
                t["model"],
                str(t["concurrency"]),
                str(t["requests"]),
                str(t["ok"]),
                str(t["busy"]),
                str(t["other"]),
                fmt(t["seconds"], 2),
                fmt(t["ok_per_s"], 2),
                fmt(t["latency_p50_ms"]),
            ]
            for t in report["throughput"]
        ],
    )
    diffs = ", ".join(f"{r['model']} {r['size']}² {r['output_check']['max_abs_diff']}" for r in report["overhead"])
    print(f"\nHTTP answer vs in-process output, max |pixel difference|: {diffs or '-'}")


def print_health(h: Mapping[str, Any]) -> None:
    busy = ", ".join(f"{k} {fmt(v, 2)}" for k, v in h["slot_busy_fraction"].items())
    gauge = ", ".join(f"{k} {fmt(v, 0)}" for k, v in h["min_in_flight_gauge"].items())
    print_table(
        f"GET /health while every model has {h['in_flight_per_model_requested']} requests in flight "
        f"({h['image_size']}² images, {h['seconds']:g} s). target: p99 <= {HEALTH_P99_MS:g} ms",
        ["probes", "p50 ms", "p99 ms", "max ms", "server p50", "server p99", "not OK", "verdict"],
        [
            [
                str(h["count"]),
                fmt(h["p50_ms"], 2),
                fmt(h["p99_ms"], 2),
                fmt(h["max_ms"], 2),
                fmt(h["server_side_p50_ms"], 2),
                fmt(h["server_side_p99_ms"], 2),
                str(h["not_ok"]),
                "PASS" if h["p99_ms"] <= HEALTH_P99_MS else "FAIL",
            ]
        ],
    )
    loads = "; ".join(f"{k}: {v['ok']} ok, {v['busy']} busy, {v['other']} other" for k, v in h["load_answers"].items())
    print(f"  load answers: {loads}")
    print(f"  slot busy fraction (inference seconds done / slot seconds, from /metrics): {busy}")
    print(f"  lowest lpa_in_flight gauge seen per model: {gauge}")


# --- main --------------------------------------------------------------------------------------------------

CATALOG = load_catalog(bundled_catalog_dir())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure what the lpa HTTP worker adds over in-process inference (loopback only).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        metavar="MODEL",
        help="catalog models to measure (each served under its manifest's capability)",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=list(DEFAULT_SIZES),
        metavar="PX",
        help="square image sizes for the overhead table (targets are judged at 512)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per model and size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before each timed series")
    parser.add_argument(
        "--pause", type=float, default=0.05, help="seconds of quiet between an in-process and an HTTP sample"
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="where `lpa fetch-models` put the model files",
    )
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=0,
        help="onnxruntime intra-op threads, in process and in the server (0 = one per core)",
    )
    parser.add_argument(
        "--inference-niceness",
        type=int,
        default=WorkerSettings().inference_niceness,
        help="the server's worker.inference_niceness (0 = inference threads at the event loop's priority)",
    )
    parser.add_argument("--cpu-only", action="store_true", help="never try GPU providers (both sides)")
    parser.add_argument("--capacity", type=int, default=1, help="server slots per model")
    parser.add_argument(
        "--queue",
        type=int,
        default=max(CONCURRENCY) - 1,
        help="server queue per model; the default lets concurrency 4 in without busy answers",
    )
    parser.add_argument("--health-seconds", type=float, default=10.0, help="how long to poll /health")
    parser.add_argument("--health-size", type=int, default=256, help="image size of the saturating load")
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds between starting the saturating load and polling /health",
    )
    parser.add_argument("--throughput-size", type=int, default=256, help="image size for the throughput runs")
    parser.add_argument(
        "--throughput-seconds", type=float, default=5.0, help="how long each model x concurrency run sends"
    )
    parser.add_argument(
        "--throughput-min-requests", type=int, default=6, help="requests each run sends at least (slow models)"
    )
    parser.add_argument(
        "--throughput-max-seconds", type=float, default=30.0, help="no run sends new requests after this long"
    )
    parser.add_argument("--request-timeout", type=float, default=120.0, help="HTTP timeout per request, seconds")
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for the server's /health to say OK",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="server log level (info: an access-log line per request, as in production; "
        "the server-side /health durations come from it)",
    )
    parser.add_argument("--max-seconds", type=float, default=900.0, help="abort the whole run after this long")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON results")
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=PHASES,
        default=list(PHASES),
        help="which measurements to run (the others print as empty tables)",
    )
    parser.add_argument("--probe-health", metavar="URL", help=argparse.SUPPRESS)  # the prober subprocess
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in CATALOG.manifests]
    if unknown:
        known = ", ".join(sorted(CATALOG.manifests))
        parser.error(f"not in the catalog: {', '.join(unknown)} (known: {known})")
    if args.repeat < 1 or args.warmup < 0 or args.capacity < 1 or args.queue < 0:
        parser.error("--repeat and --capacity must be >= 1, --warmup and --queue >= 0")
    return args


def verified_paths(models: Sequence[str], model_dir: Path) -> dict[str, Path]:
    store = ModelStore(model_dir)
    try:
        return {name: store.verified_path(CATALOG.get(name)) for name in models}
    except ModelFileError as exc:
        raise BenchError(f"{exc} (e.g. `uv run lpa fetch-models --node node.toml --no-progress`)") from exc


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    deadline = Deadline(args.max_seconds)
    busy = cpu_busy_fraction()
    if busy > 0.10:
        log(f"warning: the CPUs were {busy:.0%} busy before the run started; other work will skew the numbers")
    paths = verified_paths(args.models, args.model_dir)
    sizes = sorted(set(args.sizes) | {args.health_size, args.throughput_size})
    images = {size: test_image(size) for size in sizes}
    report: dict[str, Any] = {
        "machine": machine(),
        "cpu_busy_before_run": busy,
        "load_average_before_run": os.getloadavg(),
        "models": args.models,
        "sizes": args.sizes,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "pause_s": args.pause,
        "intra_op_threads": args.intra_op_threads,
        "inference_niceness": args.inference_niceness,
        "capacity": args.capacity,
        "queue": args.queue,
        "throughput_size": args.throughput_size,
        "image_bytes": {str(size): len(data) for size, data in images.items()},
        "targets": {
            "overhead_ms": OVERHEAD_MS,
            "overhead_fraction": OVERHEAD_FRACTION,
            "at_size": TARGET_SIZE,
            "health_p99_ms": HEALTH_P99_MS,
        },
    }
    with (
        tempfile.TemporaryDirectory(prefix="lpa-bench-") as tmp,
        lpa_serve(
            functools.partial(node_toml, args.models, args),
            Path(tmp),
            cpu_only=args.cpu_only,
            startup_timeout=args.startup_timeout,
            explain=lambda process, server_log: server_post_mortem(process, server_log, args.output),
        ) as (base_url, _, server_log),
    ):
        report.update(backend="?", overhead=[], health=None, throughput=[])
        if "overhead" in args.phases:
            report["backend"], report["overhead"] = overhead_phase(
                base_url, paths, images, args=args, deadline=deadline
            )
        if "health" in args.phases:
            deadline.check("/health under saturation")
            log("saturating every model and polling /health")
            report["health"] = health_under_saturation(
                base_url, args.models, images[args.health_size], args=args, server_log=server_log
            )
        for name in args.models if "throughput" in args.phases else []:
            for concurrency in CONCURRENCY:
                deadline.check(f"throughput {name} x{concurrency}")
                report["throughput"].append(
                    throughput(base_url, name, images[args.throughput_size], concurrency, args=args)
                )
                log(f"throughput {name} x{concurrency}: {report['throughput'][-1]['ok_per_s']:.2f} ok/s")
    report["wall_seconds"] = time.monotonic() - started
    report["load_average_after_run"] = os.getloadavg()
    return report


def overhead_phase(
    base_url: str,
    paths: Mapping[str, Path],
    images: Mapping[int, bytes],
    *,
    args: argparse.Namespace,
    deadline: Deadline,
) -> tuple[str, list[dict[str, Any]]]:
    """Per model and size, in-process and HTTP samples alternately; the two never run at once."""
    rows: list[dict[str, Any]] = []
    backend_name = "?"
    with httpx.Client(base_url=base_url, timeout=args.request_timeout, trust_env=False) as client:
        for name in args.models:
            model = InProcessModel(
                CATALOG.get(name), paths[name], intra_op_threads=args.intra_op_threads, allow_gpu=not args.cpu_only
            )
            backend_name = model.backend_name
            for size in args.sizes:
                series, check = measure_pair(client, model, name, size, images[size], args=args, deadline=deadline)
                row = overhead_row(name, size, series)
                row["output_check"] = check
                row["samples"] = {
                    "raw_run_ms": series.raw_ms,
                    "pipeline_ms": series.pipeline_ms,
                    "inproc_ms": series.inproc_ms,
                    "http_ms": series.http_ms,
                }
                rows.append(row)
                log(
                    f"{name} {size}²: raw {row['raw_run_ms']:.1f} ms, in-proc {row['inproc_ms']:.1f} ms, "
                    f"HTTP {row['http_ms']:.1f} ms"
                )
            del model  # its onnxruntime threads go before the next model is measured
    return backend_name, rows


def measure_pair(
    client: httpx.Client,
    model: InProcessModel,
    name: str,
    size: int,
    png: bytes,
    *,
    args: argparse.Namespace,
    deadline: Deadline,
) -> tuple[Series, dict[str, Any]]:
    """Warm-up, then ``repeat`` times: one in-process sample, a pause, one HTTP sample, a pause.

    Alternating keeps a slow spell of a shared machine from landing on one side only; the pause lets the
    other side's onnxruntime threads stop spinning before the next sample starts.
    """
    series = Series()
    check: dict[str, Any] = {}
    for i in range(args.warmup + args.repeat):
        deadline.check(f"{name} {size}²")
        raw, pipe, full, runs, output = model.sample(png)
        time.sleep(args.pause)
        before = server_metrics(client)
        http, response = http_sample(client, name, size, png)
        worker = inference_ms(before, server_metrics(client), label(name))
        time.sleep(args.pause)
        if i == 0:
            check = check_output(name, size, response, output)
        if i < args.warmup:
            continue
        series.raw_ms.append(raw)
        series.pipeline_ms.append(pipe)
        series.inproc_ms.append(full)
        series.http_ms.append(http)
        series.server_ms.append(worker)
        series.runs_per_image = runs
    return series, check


def inference_ms(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]], model: str
) -> float:
    """The worker's inference time of the one request between two /metrics samples; NaN if it was not one."""
    count = after.get("inference_seconds_count", {}).get(model, 0.0)
    count -= before.get("inference_seconds_count", {}).get(model, 0.0)
    total = after.get("inference_seconds_sum", {}).get(model, 0.0)
    total -= before.get("inference_seconds_sum", {}).get(model, 0.0)
    return ms(total) if count == 1 else math.nan


def save(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _finite(value: Any) -> Any:
    """NaN (a statistic of no samples) becomes null, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def prober(args: argparse.Namespace) -> int | None:
    """``--probe-health``: this process is the /health prober of a run."""
    if not args.probe_health:
        return None
    return probe_main(args.probe_health, args.health_seconds, args.request_timeout, args.output)


def finish(args: argparse.Namespace, report: dict[str, Any]) -> int:
    save(report, args.output)
    print_report(report)
    print(f"\nraw numbers: {args.output} (whole run {report['wall_seconds']:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main("worker_overhead", argv, parse_args, run, finish, prober=prober)


if __name__ == "__main__":
    sys.exit(main())
