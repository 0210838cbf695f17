"""Soak: a real ``lpa serve`` under twice the load it admits, for minutes; answers, memory, descriptors, /health.

The worker serves the node file's models (default: ``node.example.toml``'s, with ``--model-dir``). Each model gets
``--load-factor`` (default 2) × (capacity + queue) clients, i.e. twice what the worker admits at once, so every
slot is busy, every queue full, and the rest of the requests are refused. Each client keeps one request in flight,
cycling through the request shapes go-livepeer and BYOC callers send (multipart with a JSON answer; a raw image
body with ``Accept: image/png``; the pipelines' options) over a few image sizes; after a busy answer it backs off
50 ms as a gateway would. The clients run at a lowered priority (``--client-niceness``): they stand in for remote
gateways and must not take the worker's event loop's CPU. Before the clock starts, a warm-up pass sends every
request kind of every model once. A separate process polls ``GET /health`` on one keep-alive connection
throughout; this process samples the server's RSS, open file descriptors and threads every second from ``/proc``.

Targets (any miss exits 1):

- every answer is 200 (a PNG or a JSON image answer) or 500 with ``insufficient capacity``; anything else, a
  transport error included, fails the run (the first few are printed);
- RSS growth after warm-up ≤ ``--rss-growth`` (10 %): the median of the last window against the median of the
  first window after ``--warmup-seconds`` of load;
- open file descriptors flat: the same two medians differ by at most ``--fd-tolerance``;
- ``/health`` p99 ≤ 20 ms in every window of ``--window-seconds`` (warm-up included), and every probe says OK.

Bounded: ``--minutes`` of load (default 10, 60 s windows; ``--quick``: 20 s, 10 s windows, one image size, about
30 s in all, for CI), ``--max-requests``, per-request timeouts. Loopback only. Raw numbers, the resource samples
and the machine go to ``bench/results/soak.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
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

import harness
import httpx
import worker_overhead as wo

from appliance.config import ServedModel, load_node
from appliance.priority import lower_thread_priority
from appliance.resources import example_node_file

HEALTH_P99_MS = 20.0
RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
IMAGE_SIZES = (64, 160, 256)  # square test pictures; every request shape cycles through them
QUICK_IMAGE_SIZES = (64,)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UNEXPECTED_KEPT = 10


# --- the load --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One way of calling a model's route."""

    multipart: bool
    accept_png: bool
    params: dict[str, str] = field(default_factory=dict)


def shapes_for(capability: str) -> list[Shape]:
    if capability == "upscale":  # the contract's route: multipart in, JSON out
        return [Shape(multipart=True, accept_png=False)]
    options = {"segmentation": {"cutout": "true"}, "depth": {"colormap": "true"}}.get(capability, {})
    return [
        Shape(multipart=True, accept_png=False),
        Shape(multipart=False, accept_png=True),
        Shape(multipart=True, accept_png=True, params=options),
        Shape(multipart=False, accept_png=False, params=options),
    ]


@dataclass
class Tally:
    ok: int = 0
    busy: int = 0
    unexpected: int = 0
    examples: list[str] = field(default_factory=list)

    def add_unexpected(self, what: str) -> None:
        self.unexpected += 1
        if len(self.examples) < UNEXPECTED_KEPT:
            self.examples.append(what)


class Load:
    """The clients: ``clients`` threads per model, each with its own keep-alive connection."""

    def __init__(self, base_url: str, models: Sequence[ServedModel], args: argparse.Namespace) -> None:
        self.base_url, self.args = base_url, args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.tallies = {m.served_id: Tally() for m in models}
        self.images = [wo.test_image(size, seed=size) for size in (QUICK_IMAGE_SIZES if args.quick else IMAGE_SIZES)]
        self.threads = [
            threading.Thread(target=self._client, args=(model, i), daemon=True, name=f"soak-{model.served_id}-{i}")
            for model in models
            for i in range(clients_per_model(model, args.load_factor))
        ]

    def warm_up(self, models: Sequence[ServedModel]) -> float:
        """Every request kind of every model once (untimed; one at a time per model, the models side by side);
        each must answer 200. Returns the seconds it took."""
        failures: list[str] = []

        def one_model(model: ServedModel) -> None:
            route = f"/m/{model.capability}/{model.served_id}/{model.capability}"
            with httpx.Client(base_url=self.base_url, timeout=self.args.request_timeout, trust_env=False) as client:
                for shape, image in itertools.product(shapes_for(model.capability), self.images):
                    try:
                        verdict = judge(self._send(client, route, model.capability, shape, image), shape)
                    except httpx.HTTPError as exc:
                        verdict = f"{type(exc).__name__}: {exc}"
                    if verdict != "ok":
                        failures.append(f"warm-up request to {route} ({shape}): {verdict}")
                        return

        started = time.monotonic()
        threads = [threading.Thread(target=one_model, args=(model,), daemon=True) for model in models]
        for thread in threads:
            thread.start()
        harness.join_all(threads, self.args.request_timeout * 4)
        if failures or any(thread.is_alive() for thread in threads):
            raise harness.BenchError("; ".join(failures) or "the warm-up pass did not finish")
        return time.monotonic() - started

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self, timeout: float) -> None:
        self.stop.set()
        harness.join_all(self.threads, timeout)

    def _ticket(self) -> bool:
        with self.lock:
            if self.stop.is_set() or self.sent >= self.args.max_requests:
                return False
            self.sent += 1
            return True

    def _client(self, model: ServedModel, index: int) -> None:
        # The clients stand in for gateways on other machines: here they share the worker's cores, and must not
        # take the CPU from its event loop (or the /health prober) more than remote callers would.
        lower_thread_priority(self.args.client_niceness)
        tally = self.tallies[model.served_id]
        route = f"/m/{model.capability}/{model.served_id}/{model.capability}"
        calls = itertools.cycle(itertools.product(shapes_for(model.capability), self.images))
        for _ in range(index):  # clients of one model start at different shapes
            next(calls)
        with httpx.Client(base_url=self.base_url, timeout=self.args.request_timeout, trust_env=False) as client:
            while self._ticket():
                shape, image = next(calls)
                try:
                    response = self._send(client, route, model.capability, shape, image)
                except httpx.HTTPError as exc:
                    with self.lock:
                        tally.add_unexpected(f"{route}: {type(exc).__name__}: {exc}")
                    time.sleep(wo.BUSY_BACKOFF_S)
                    continue
                verdict = judge(response, shape)
                with self.lock:
                    if verdict == "ok":
                        tally.ok += 1
                    elif verdict == "busy":
                        tally.busy += 1
                    else:
                        tally.add_unexpected(f"{route}: {verdict}")
                if verdict != "ok":
                    time.sleep(wo.BUSY_BACKOFF_S)

    @staticmethod
    def _send(client: httpx.Client, route: str, capability: str, shape: Shape, image: bytes) -> httpx.Response:
        headers = {"Accept": "image/png" if shape.accept_png else "application/json"}
        if shape.multipart:
            data = {"prompt": "soak", **shape.params} if capability == "upscale" else dict(shape.params)
            files = {"image": ("image", image, "application/octet-stream")}  # as go-livepeer labels it
            return client.post(route, data=data, files=files, headers=headers)
        headers["Content-Type"] = "image/png"
        return client.post(route, content=image, params=shape.params, headers=headers)


def clients_per_model(model: ServedModel, load_factor: float) -> int:
    return max(1, math.ceil(load_factor * (model.capacity + model.queue)))


def judge(response: httpx.Response, shape: Shape) -> str:
    """``ok``, ``busy``, or what was wrong with the answer."""
    body = response.content
    if response.status_code == 200:
        if shape.accept_png:
            good = response.headers.get("content-type") == "image/png" and body.startswith(PNG_MAGIC)
        else:
            try:
                url = json.loads(body)["images"][0]["url"]
                good = url.startswith("data:image/png;base64,")
            except (ValueError, KeyError, IndexError, TypeError):
                good = False
        return "ok" if good else f"200 with a malformed answer: {body[:120]!r}"
    if response.status_code == 500 and wo.BUSY_TEXT in response.text:
        return "busy"
    return f"HTTP {response.status_code}: {body[:200]!r}"


# --- the server and its resources ------------------------------------------------------------------------


def served_models(args: argparse.Namespace) -> list[ServedModel]:
    return list(load_node(args.node).models)


def node_text(models: Sequence[ServedModel], args: argparse.Namespace, listen: str) -> str:
    """The soaked node: the node file's models as they are, on loopback, with the test's model folder."""
    node = load_node(args.node)
    worker = {
        "listen": listen,
        "model_dir": args.model_dir or node.worker.model_path,
        "catalog_dir": node.worker.catalog_dir or None,
        "intra_op_threads": node.worker.intra_op_threads,
        "inference_niceness": node.worker.inference_niceness,
        "max_body_bytes": node.worker.max_body_bytes,
        "max_image_pixels": node.worker.max_image_pixels,
        "log_level": node.worker.log_level,
    }
    served = [
        {
            "model": m.model,
            "capability": m.capability,
            "model_id": m.model_id or None,
            "capacity": m.capacity,
            "queue": m.queue,
            "warm": m.warm,
            "batch": None if m.batch is None else {"max_size": m.batch.max_size, "max_wait_ms": m.batch.max_wait_ms},
        }
        for m in models
    ]
    return harness.node_file(worker, served)


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_mb: float
    fds: int
    threads: int


def read_proc(pid: int) -> tuple[float, int, int]:
    """(RSS in MiB, open file descriptors, threads) of a process, from /proc."""
    rss_kb, threads = 0, 0
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss_kb / 1024, sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()), threads


# --- /health, from a process of its own ------------------------------------------------------------------


def probe_main(base_url: str, seconds: float, timeout: float, output: Path) -> int:
    """``--probe-health``: sequential GET /health for ``seconds``; writes [[wall time, ms, ok], ...] as JSON."""
    samples: list[tuple[float, float, bool]] = []
    with httpx.Client(base_url=base_url, timeout=timeout, trust_env=False) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started, wall = time.perf_counter(), time.time()
            try:
                response = client.get("/health")
                ok = response.status_code == 200 and response.json().get("status") == "OK"
            except (httpx.HTTPError, ValueError):
                ok = False
            samples.append((wall, wo.ms(time.perf_counter() - started), ok))
            if not ok:
                time.sleep(0.01)
    output.write_text(json.dumps(samples), encoding="utf-8")
    return 0


# --- the run ---------------------------------------------------------------------------------------------


def windows(duration: float, width: float) -> list[tuple[float, float]]:
    count = max(1, math.ceil(duration / width - 1e-9))
    return [(i * width, min(duration, (i + 1) * width)) for i in range(count)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    models = served_models(args)
    duration = args.seconds
    if not 0 < args.warmup_seconds < duration:
        raise harness.BenchError(f"--warmup-seconds must be inside the run (0 < {args.warmup_seconds} < {duration})")
    busy_before = wo.cpu_busy_fraction()
    load_before = os.getloadavg()
    harness.log(f"host CPU busy before the soak: {busy_before:.0%} (load average {load_before[0]:.2f})")
    samples: list[Sample] = []
    with (
        tempfile.TemporaryDirectory(prefix="lpa-soak-") as tmp,
        harness.lpa_serve(
            functools.partial(node_text, models, args),
            Path(tmp),
            cpu_only=args.cpu_only,
            startup_timeout=args.startup_timeout,
        ) as (base_url, process, server_log),
    ):
        load = Load(base_url, models, args)
        harness.log(f"warm-up pass (every request kind once): {load.warm_up(models):.1f} s")
        probe_file = Path(tmp) / "health.json"
        probe = subprocess.Popen(
            [
                *(sys.executable, str(Path(__file__).resolve()), "--probe-health", base_url),
                *("--output", str(probe_file), "--probe-seconds", str(duration)),
                *("--request-timeout", str(args.request_timeout)),
            ],
            stdin=subprocess.DEVNULL,
        )
        harness.log(
            f"soaking {base_url} for {duration:g} s: "
            + ", ".join(f"{m.served_id} {clients_per_model(m, args.load_factor)} clients" for m in models)
        )
        started_wall, started = time.time(), time.monotonic()
        load.start()
        next_report = started + args.window_seconds
        try:
            while (now := time.monotonic()) - started < duration:
                if process.poll() is not None:
                    raise harness.BenchError(f"lpa serve exited with {process.returncode}:\n{harness.tail(server_log)}")
                rss, fds, threads = read_proc(process.pid)
                samples.append(Sample(now - started, rss, fds, threads))
                if now >= next_report:
                    total = {k: sum(getattr(t, k) for t in load.tallies.values()) for k in ("ok", "busy", "unexpected")}
                    harness.log(
                        f"t={now - started:5.0f} s  rss {rss:.0f} MiB  fds {fds}  threads {threads}  answers {total}"
                    )
                    next_report += args.window_seconds
                time.sleep(max(0.0, min(args.sample_seconds, duration - (time.monotonic() - started))))
        finally:
            load.finish(args.request_timeout + 5)
            try:
                probe.wait(timeout=args.request_timeout + 30)
            except subprocess.TimeoutExpired:
                probe.kill()
                probe.wait(timeout=10)
        elapsed = time.monotonic() - started
        if probe.returncode != 0 or not probe_file.exists():
            raise harness.BenchError(f"the /health prober exited with {probe.returncode}")
        health = [(wall - started_wall, ms, ok) for wall, ms, ok in json.loads(probe_file.read_text())]
        server_alive = process.poll() is None
    return summarise(
        args=args,
        models=models,
        load=load,
        samples=samples,
        health=health,
        elapsed=elapsed,
        server_alive=server_alive,
        busy_before=busy_before,
        load_before=load_before,
    )


def summarise(
    *,
    args: argparse.Namespace,
    models: Sequence[ServedModel],
    load: Load,
    samples: Sequence[Sample],
    health: Sequence[tuple[float, float, bool]],
    elapsed: float,
    server_alive: bool,
    busy_before: float,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    duration, width = args.seconds, args.window_seconds
    after = [s for s in samples if s.t >= args.warmup_seconds]
    first = [s for s in after if s.t < args.warmup_seconds + width] or after[:1]
    last = [s for s in after if s.t >= duration - width] or after[-1:]
    if not first or not last:
        raise harness.BenchError("no resource samples after the warm-up; is the run too short?")
    rss_start = statistics.median(s.rss_mb for s in first)
    rss_end = statistics.median(s.rss_mb for s in last)
    fd_start = statistics.median(s.fds for s in first)
    fd_end = statistics.median(s.fds for s in last)
    rss_growth = (rss_end - rss_start) / rss_start
    health_windows = []
    for low, high in windows(duration, width):
        inside = [ms for t, ms, _ in health if low <= t < high]
        health_windows.append(
            {
                "from_s": low,
                "to_s": high,
                "count": len(inside),
                "p50_ms": harness.percentile(inside, 50),
                "p99_ms": harness.percentile(inside, 99),
                "max_ms": max(inside, default=math.nan),
            }
        )
    all_ms = [ms for _, ms, _ in health]
    not_ok = sum(1 for _, _, ok in health if not ok)
    worst_p99 = max((w["p99_ms"] for w in health_windows if w["count"]), default=math.nan)
    tallies = {name: {"ok": t.ok, "busy": t.busy, "unexpected": t.unexpected} for name, t in load.tallies.items()}
    unexpected = sum(t.unexpected for t in load.tallies.values())
    examples = [e for t in load.tallies.values() for e in t.examples][:UNEXPECTED_KEPT]
    checks = {
        "answers_only_200_or_busy": unexpected == 0 and server_alive,
        "every_model_answered_200": all(t.ok > 0 for t in load.tallies.values()),
        "rss_growth": rss_growth <= args.rss_growth,
        "fds_flat": abs(fd_end - fd_start) <= args.fd_tolerance,
        "health_p99_every_window": not math.isnan(worst_p99) and worst_p99 <= HEALTH_P99_MS,
        "health_always_ok": not_ok == 0 and len(health) > 0,
    }
    return {
        "benchmark": "soak",
        "machine": wo.machine(),
        "cpu_busy_before": busy_before,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "models": [
            {
                "model_id": m.served_id,
                "capability": m.capability,
                "capacity": m.capacity,
                "queue": m.queue,
                "clients": clients_per_model(m, args.load_factor),
            }
            for m in models
        ],
        "elapsed_s": elapsed,
        "answers": tallies,
        "requests": sum(t.ok + t.busy + t.unexpected for t in load.tallies.values()),
        "unexpected_examples": examples,
        "server_alive_at_end": server_alive,
        "rss_mb": {
            "after_warmup": rss_start,
            "end": rss_end,
            "peak": max(s.rss_mb for s in samples),
            "growth": rss_growth,
            "limit": args.rss_growth,
        },
        "fds": {
            "after_warmup": fd_start,
            "end": fd_end,
            "min": min(s.fds for s in after),
            "max": max(s.fds for s in after),
            "tolerance": args.fd_tolerance,
        },
        "threads": {
            "after_warmup": statistics.median(s.threads for s in first),
            "end": statistics.median(s.threads for s in last),
            "max": max(s.threads for s in samples),
        },
        "health": {
            "count": len(all_ms),
            "not_ok": not_ok,
            "p50_ms": harness.percentile(all_ms, 50),
            "p99_ms": harness.percentile(all_ms, 99),
            "max_ms": max(all_ms, default=math.nan),
            "worst_window_p99_ms": worst_p99,
            "limit_ms": HEALTH_P99_MS,
            "windows": health_windows,
        },
        "samples": [[round(s.t, 2), round(s.rss_mb, 1), s.fds, s.threads] for s in samples],
        "checks": checks,
        "passed": all(checks.values()),
    }


def print_report(r: Mapping[str, Any]) -> None:
    m = r["machine"]
    print(
        f"\nsoak: {r['elapsed_s']:.0f} s, {r['requests']} requests, {m['cpu']}, {m['usable_cores']} cores; "
        f"load average before {r['load_average_before'][0]:.2f}, after {r['load_average_after'][0]:.2f}"
    )
    wo.print_table(
        "Answers (clients per model = load factor × (capacity + queue))",
        ["model", "capacity", "queue", "clients", "200", "500 busy", "other"],
        [
            [
                x["model_id"],
                str(x["capacity"]),
                str(x["queue"]),
                str(x["clients"]),
                str(r["answers"][x["model_id"]]["ok"]),
                str(r["answers"][x["model_id"]]["busy"]),
                str(r["answers"][x["model_id"]]["unexpected"]),
            ]
            for x in r["models"]
        ],
    )
    rss, fds, health, checks = r["rss_mb"], r["fds"], r["health"], r["checks"]

    def verdict(key: str) -> str:
        return "PASS" if checks[key] else "FAIL"

    wo.print_table(
        "Targets",
        ["what", "measured", "target", "verdict"],
        [
            [
                "answers other than 200 / 500 busy",
                str(sum(a["unexpected"] for a in r["answers"].values())),
                "0",
                verdict("answers_only_200_or_busy"),
            ],
            [
                "RSS after warm-up → end (MiB)",
                f"{rss['after_warmup']:.0f} → {rss['end']:.0f} ({rss['growth']:+.1%}; peak {rss['peak']:.0f})",
                f"≤ +{rss['limit']:.0%}",
                verdict("rss_growth"),
            ],
            [
                "open fds after warm-up → end",
                f"{fds['after_warmup']:g} → {fds['end']:g} (min {fds['min']}, max {fds['max']})",
                f"± {fds['tolerance']}",
                verdict("fds_flat"),
            ],
            [
                "/health p99, worst window (ms)",
                f"{wo.fmt(health['worst_window_p99_ms'], 2)} (all: p50 "
                f"{wo.fmt(health['p50_ms'], 2)}, p99 {wo.fmt(health['p99_ms'], 2)}, max {wo.fmt(health['max_ms'], 1)}; "
                f"{health['count']} probes)",
                f"≤ {health['limit_ms']:g}",
                verdict("health_p99_every_window"),
            ],
            [
                "/health said OK",
                f"{health['count'] - health['not_ok']} of {health['count']}",
                "all",
                verdict("health_always_ok"),
            ],
        ],
    )
    print(f"threads after warm-up → end: {r['threads']['after_warmup']:g} → {r['threads']['end']:g}")
    for example in r["unexpected_examples"]:
        print(f"  unexpected: {example}")
    print(f"\nverdict: {'PASS' if r['passed'] else 'FAIL'}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Soak a real lpa serve at twice what it admits (loopback only); exit 1 when a target is missed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    parser.add_argument("--quick", action="store_true", help="20 s, 5 s warm-up, 10 s windows (for CI)")
    parser.add_argument("--node", type=Path, default=example_node_file(), help="node file whose models to serve")
    parser.add_argument("--model-dir", type=Path, default=None, help="overrides the node file's worker.model_dir")
    parser.add_argument("--load-factor", type=float, default=2.0, help="clients per model ÷ (capacity + queue)")
    parser.add_argument("--warmup-seconds", type=float, default=None, help="default: 10 %% of the run, ≥ 10 s")
    parser.add_argument("--window-seconds", type=float, default=None, help="default: 60 (5 with --quick)")
    parser.add_argument("--sample-seconds", type=float, default=1.0, help="RSS / fd sampling period")
    parser.add_argument("--rss-growth", type=float, default=0.10, help="largest RSS growth after warm-up")
    parser.add_argument("--fd-tolerance", type=int, default=8, help="largest change of open fds after warm-up")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="stop sending after this many")
    parser.add_argument(
        "--client-niceness", type=int, default=5, help="added to the load threads' nice value (they share the CPU)"
    )
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--cpu-only", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--probe-health", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--probe-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.seconds = 20.0 if args.quick else args.minutes * 60
    if args.window_seconds is None:
        args.window_seconds = 10.0 if args.quick else 60.0
    if args.warmup_seconds is None:
        args.warmup_seconds = 5.0 if args.quick else max(10.0, 0.1 * args.seconds)
    return args


def prober(args: argparse.Namespace) -> int | None:
    """``--probe-health``: this process is the /health prober of a soak."""
    if not args.probe_health:
        return None
    return probe_main(args.probe_health, args.probe_seconds, args.request_timeout, args.output)


def finish(args: argparse.Namespace, report: dict[str, Any]) -> int:
    wo.save(report, args.output)
    print_report(report)
    print(f"raw numbers: {args.output}")
    return 0 if report["passed"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    return harness.bench_main("soak", argv, parse_args, run, finish, prober=prober)


if __name__ == "__main__":
    sys.exit(main())
