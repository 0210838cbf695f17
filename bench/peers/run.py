"""bench/peers: the same real models served by this worker and by the servers an operator would pick instead.

One run, one machine, one server at a time: ``lpa serve``; the design Livepeer's ai-runner uses (FastAPI +
uvicorn, ``async def`` routes calling the model synchronously); NVIDIA Triton through PyTriton with its dynamic
batcher; Ray Serve; BentoML; and the floor, the raw onnxruntime session in this process with no server at all.
Every server does the same work per request (the appliance's decode, pipeline and PNG encode; see serving.py),
so the numbers compare serving.

Per server and case (u2netp at 320², waifu2x-upconv7 at 256² and 512²): p50/p99 latency at concurrency 1;
ok/s at concurrency 1, 4 and 8 (bounded request counts, a duration cap); the liveness route's p99 while the
model is saturated; the peak RSS (and PSS) of the server's whole process tree. One table with ratios to the
floor and to the best peer; raw numbers and a machine description in ``bench/results/peers.json``.

The peers live in their own virtual environment (default ``var/peers-venv``), created or updated here with
``uv`` from ``bench/peers/requirements.txt``; the appliance's ``.venv`` is never touched. A peer that cannot be
installed or started is shown as skipped, with the reason. Loopback only; everything is bounded by counts,
timeouts and ``--max-seconds``. See bench/PEERS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # loadgen/servers/report, and bench/'s harness and worker_overhead

import worker_overhead as wo  # noqa: E402
from harness import BenchError, bench_main, log, tail  # noqa: E402
from loadgen import Results, Tickets, concurrent, summary  # noqa: E402
from report import print_report  # noqa: E402
from servers import REPO, SERVERS, Context, PeerEnv, ProcessTree, Server  # noqa: E402

from appliance.catalog import load_catalog  # noqa: E402
from appliance.config import WorkerSettings  # noqa: E402
from appliance.fetch import fetch_models  # noqa: E402
from appliance.modelstore import ModelStore  # noqa: E402
from appliance.resources import bundled_catalog_dir  # noqa: E402

CASES = ("u2netp:320", "waifu2x-upconv7:256", "waifu2x-upconv7:512")
QUICK_CASES = ("waifu2x-upconv7:256",)
CONCURRENCY = (1, 4, 8)
RESULTS = REPO / "bench" / "results" / "peers.json"
REQUIREMENTS = HERE / "requirements.txt"
PEER_PACKAGES = ("nvidia-pytriton", "tritonclient", "ray", "bentoml", "fastapi", "uvicorn", "starlette", "pydantic")
PEER_PACKAGES += ("python-multipart", "onnxruntime", "numpy", "pillow", "msgspec", "structlog")
CATALOG = load_catalog(bundled_catalog_dir())


# --- the peers' virtual environment ----------------------------------------------------------------------------


def uv_binary() -> str | None:
    local = REPO / ".tools" / "bin" / "uv"
    return str(local) if local.exists() else shutil.which("uv")


def ensure_peer_env(path: Path, *, install: bool) -> tuple[PeerEnv | None, str]:
    """Create (or update) the peers' venv from requirements.txt; (env, "") or (None, why not)."""
    python = path / "bin" / "python"
    uv = uv_binary()
    try:
        if install:
            if uv is None:
                return None, "uv not found (.tools/bin/uv or PATH): cannot create the peers' venv"
            if not python.exists():
                base = getattr(sys, "_base_executable", sys.executable)  # the interpreter behind .venv
                log(f"creating the peers' venv at {path} ({base})")
                subprocess.run([uv, "venv", "--python", base, str(path)], check=True, capture_output=True, timeout=300)
            log(f"installing the peers into {path} from {REQUIREMENTS.name} (uv pip install)")
            command = [uv, "pip", "install", "--python", str(python), "-r", str(REQUIREMENTS)]
            subprocess.run(command, check=True, capture_output=True, timeout=1200)
        if not python.exists():
            return None, f"no peers' venv at {path} (run without --no-install)"
        probe = (
            "import importlib.metadata as m, json, sysconfig\n"
            f"names = {list(PEER_PACKAGES)!r}\n"
            "versions = {}\n"
            "for n in names:\n"
            "    try: versions[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: versions[n] = None\n"
            "print(json.dumps({'versions': versions, 'libdir': sysconfig.get_config_var('LIBDIR') or ''}))\n"
        )
        out = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True, timeout=120)
    except subprocess.CalledProcessError as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr)
        return None, f"peers' venv failed: {' '.join(map(str, exc.cmd[:4]))}…: {stderr.strip()[-400:]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"peers' venv failed: {exc}"
    found = json.loads(out.stdout)
    return PeerEnv(python=python, versions=found["versions"], libdir=found["libdir"]), ""


# --- the floor ---------------------------------------------------------------------------------------------------


def run_floor(
    python: Path | str, args: argparse.Namespace, ctx: Context, images: Mapping[str, Path], *, full: bool
) -> dict[str, Any]:
    """floor.py in a subprocess of ``python``: in-process latency (and, ``full``, throughput); its RSS sampled."""
    out = ctx.workdir / f"floor-{'full' if full else 'latency'}-{Path(python).parent.parent.name}.json"
    command = [str(python), str(HERE / "floor.py"), "--model-dir", str(ctx.model_dir), "--output", str(out)]
    command += ["--intra-op-threads", str(ctx.intra_op_threads), "--repeat", str(args.repeat)]
    command += ["--warmup", str(args.warmup), "--rounds", str(args.rounds), "--min-requests", str(args.min_requests)]
    command += ["--max-seconds", str(args.throughput_seconds), "--join-seconds", str(args.request_timeout)]
    command += ["--cases", *[f"{case}:{images[case]}" for case in args.cases]]
    command += ["--concurrency", *(map(str, CONCURRENCY) if full else [])]
    if full:
        command += ["--reference-dir", str(ctx.workdir)]
    env = ctx.peer_env() if ctx.peer and Path(python) == ctx.peer.python else dict(os.environ)
    log_path = out.with_suffix(".log")
    with log_path.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    tree = ProcessTree([process.pid])
    tree.start()
    try:
        process.wait(timeout=args.max_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    finally:
        tree.stop_sampling()
    if process.returncode != 0:
        raise BenchError(f"floor.py exited with {process.returncode}:\n{tail(log_path, 25)}")
    report = json.loads(out.read_text(encoding="utf-8"))
    report["memory"] = tree.report()
    return report


# --- one server ----------------------------------------------------------------------------------------------------


def wait_ready(server: Server, timeout: float) -> float:
    started = time.monotonic()
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        while time.monotonic() - started < timeout:
            for item in server.launched:
                if item.process.poll() is not None:
                    raise BenchError(f"exited with {item.process.returncode}:\n{tail(item.log, 25)}")
            try:
                if server.ready(client):
                    return time.monotonic() - started
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.25)
    logs = "\n".join(tail(item.log, 15) for item in server.launched)
    raise BenchError(f"not ready after {timeout:g} s:\n{logs}")


def compare(server: Server, response: httpx.Response, reference: Path) -> dict[str, Any]:
    """The answer against the floor's output for the same image: shape and max |pixel difference|."""
    if response.status_code != 200:
        raise BenchError(f"HTTP {response.status_code}: {response.text[:300]}")
    got = np.asarray(Image.open(io.BytesIO(server.output_png(response)))).astype(np.int64)
    want = np.asarray(Image.open(reference)).astype(np.int64)
    if got.shape != want.shape:
        return {"shape": list(got.shape), "expected_shape": list(want.shape), "max_abs_diff": None}
    return {"shape": list(got.shape), "max_abs_diff": int(np.abs(got - want).max())}


def timed_post(server: Server, client: httpx.Client, model: str, png: bytes) -> tuple[bool, float, str]:
    started = time.perf_counter()
    try:
        response = server.post(client, model, png)
    except httpx.HTTPError as exc:
        return False, time.perf_counter() - started, repr(exc)
    elapsed = time.perf_counter() - started
    ok = response.status_code == 200
    return ok, elapsed, "" if ok else f"HTTP {response.status_code}: {response.text[:120]}"


def latency(server: Server, client: httpx.Client, case: str, png: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """``--repeat`` sequential requests. Where the server counts its own work per request (lpa's /metrics), also
    ``added``: each request's time minus the server's own decode + pipeline + encode time for that request, what
    serving adds, free of the model's run-to-run noise on a shared machine."""
    model = case.split(":", maxsplit=1)[0]
    samples: list[float] = []
    work: list[float] = []
    added: list[float] = []
    for _ in range(args.repeat):
        before = server.work_snapshot(client, model)
        ok, seconds, error = timed_post(server, client, model, png)
        if not ok:
            raise BenchError(f"{case}: {error}")
        after = server.work_snapshot(client, model)
        samples.append(seconds * 1000.0)
        if before is not None and after is not None and after[1] - before[1] == 1:
            work.append((after[0] - before[0]) * 1000.0)
            added.append(samples[-1] - work[-1])
        time.sleep(args.pause)
    result = summary(samples)
    if added:
        result["server_work"] = summary(work)
        result["added"] = summary(added)
    return result


def throughput(server: Server, model: str, png: bytes, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    def worker(tickets: Tickets, results: Results) -> None:
        with httpx.Client(timeout=args.request_timeout, trust_env=False) as client:
            while tickets.take():
                ok, seconds, error = timed_post(server, client, model, png)
                results.record(ok, seconds, error)

    requests = max(args.rounds * concurrency, args.min_requests)
    return concurrent(worker, concurrency, requests, args.throughput_seconds, args.request_timeout)


def liveness(server: Server, model: str, png: bytes, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """``--health-clients`` clients resend ``model`` as soon as they get an answer; a separate process polls the
    server's liveness route on one keep-alive connection for ``--health-seconds``."""
    stop = threading.Event()
    results = Results()

    def client_loop() -> None:
        with httpx.Client(timeout=args.request_timeout, trust_env=False) as client:
            while not stop.is_set():
                ok, seconds, error = timed_post(server, client, model, png)
                results.record(ok, seconds, error)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(args.health_clients)]
    for thread in threads:
        thread.start()
    url = server.liveness_url(model)
    try:
        time.sleep(args.settle)  # every client's request is in: the model is busy, the rest queue behind it
        out = workdir / "probe.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--probe", url, "--output", str(out)]
        command += ["--health-seconds", str(args.health_seconds)]
        subprocess.run(command, check=True, timeout=args.health_seconds + 120, stdin=subprocess.DEVNULL)
        probe = json.loads(out.read_text(encoding="utf-8"))
    finally:
        stop.set()
    end = time.monotonic() + args.request_timeout
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return {
        "url": url,
        "clients": args.health_clients,
        "seconds": args.health_seconds,
        **summary(probe["samples_ms"]),
        "not_ok": probe["not_ok"],
        "load_ok": results.ok,
        "load_failed": results.failed,
        "load_errors": results.errors,
    }


def probe_main(url: str, seconds: float, output: Path) -> int:
    """``--probe``: sequential GETs on one keep-alive connection; a non-200 or an error counts as not OK."""
    samples: list[float] = []
    not_ok = 0
    with httpx.Client(timeout=60.0, trust_env=False) as client:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            try:
                ok = client.get(url).status_code == 200
            except httpx.HTTPError:
                ok = False
            samples.append((time.perf_counter() - started) * 1000.0)
            not_ok += not ok
    output.write_text(json.dumps({"samples_ms": samples, "not_ok": not_ok}), encoding="utf-8")
    return 0


def measure(server: Server, args: argparse.Namespace, images: Mapping[str, Path], ctx: Context) -> dict[str, Any]:
    pngs = {case: images[case].read_bytes() for case in args.cases}
    cases: dict[str, Any] = {}
    with httpx.Client(timeout=args.request_timeout, trust_env=False) as client:
        for case in args.cases:  # warm-up; the first answer is checked against the floor's output
            model = case.split(":")[0]
            reference = ctx.workdir / f"{case.replace(':', '-')}.png"  # floor.py wrote it
            check = compare(server, server.post(client, model, pngs[case]), reference)
            for _ in range(args.warmup - 1):
                server.post(client, model, pngs[case])
            cases[case] = {"check": check, "throughput": {}}
        for case in args.cases:
            cases[case]["latency"] = latency(server, client, case, pngs[case], args)
            log(f"  {case}: p50 {cases[case]['latency']['p50_ms']:.0f} ms")
    for case in args.cases:
        for concurrency in CONCURRENCY:
            row = throughput(server, case.split(":")[0], pngs[case], concurrency, args)
            cases[case]["throughput"][str(concurrency)] = row
            log(f"  {case} x{concurrency}: {row['ok_per_s']:.2f} ok/s ({row['ok']} ok, {row['failed']} failed)")
    health_model = args.health_case.split(":")[0]
    live = liveness(server, health_model, images[args.health_case].read_bytes(), args, ctx.workdir)
    log(f"  liveness under saturation: p99 {live['p99_ms']:.1f} ms over {live['n']} probes")
    return {"cases": cases, "liveness": live}


def bench_server(key: str, args: argparse.Namespace, images: Mapping[str, Path], ctx: Context) -> dict[str, Any]:
    server = SERVERS[key](ctx, sorted({case.split(":")[0] for case in [*args.cases, args.health_case]}))
    result: dict[str, Any] = {"key": key, "server": server.name, "status": "ok", "settings": server.settings()}
    if server.needs_peer_env and ctx.peer is None:
        return {**result, "status": "skipped", "reason": ctx.skip_reason}
    log(f"{server.name}: starting")
    try:
        server.launched = server.start()
    except (OSError, BenchError) as exc:
        return {**result, "status": "skipped", "reason": f"could not start: {exc}"}
    tree = ProcessTree([item.process.pid for item in server.launched])
    tree.start()
    try:
        result["startup_seconds"] = wait_ready(server, args.startup_timeout)
        log(f"{server.name}: ready after {result['startup_seconds']:.1f} s")
        result.update(measure(server, args, images, ctx))
    except (BenchError, httpx.HTTPError, subprocess.SubprocessError, KeyError, ValueError) as exc:
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:2000])
        log(f"{server.name}: FAILED: {result['reason'][:300]}")
    finally:
        tree.stop_sampling()
        result["memory"] = tree.report()
        result["killed_after_graceful_stop"] = tree.terminate(server.launched)
        result["logs"] = [str(item.log) for item in server.launched]
        server.cleanup()
    return result


# --- main ------------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve the same real models with lpa serve and its peers, one at a time; one table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one case (waifu2x 256²), few requests: a few minutes")
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=list(SERVERS),
        help="which servers (default all; quick: all but lpa-nice0 and lpa-unit)",
    )
    parser.add_argument("--cases", nargs="+", metavar="MODEL:SIZE", help=f"default {' '.join(CASES)}")
    parser.add_argument("--repeat", type=int, help="sequential requests per case for p50/p99 (default 8; quick 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed requests per case (the first is checked)")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between sequential requests")
    parser.add_argument("--rounds", type=int, help="throughput requests per client (default 2; quick 1)")
    parser.add_argument("--min-requests", type=int, help="throughput requests per run at least (default 4; quick 1)")
    parser.add_argument(
        "--throughput-seconds", type=float, help="no new throughput request after this long (default 30; quick 10)"
    )
    parser.add_argument("--health-case", default="waifu2x-upconv7:256", help="the case that saturates the model")
    parser.add_argument("--health-clients", type=int, help="clients that saturate the model (default 8; quick 4)")
    parser.add_argument(
        "--health-seconds", type=float, help="how long to poll the liveness route (default 10; quick 4)"
    )
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of load before polling starts")
    parser.add_argument("--capacity", type=int, default=1, help="lpa serve: inferences at once per model")
    parser.add_argument(
        "--queue", type=int, default=max(CONCURRENCY) - 1, help="lpa serve: waiting requests per model (c=8 fits)"
    )
    parser.add_argument(
        "--inference-niceness",
        type=int,
        default=WorkerSettings().inference_niceness,
        help="lpa serve: the node file's default",
    )
    parser.add_argument("--intra-op-threads", type=int, default=0, help="onnxruntime threads, every server (0=auto)")
    parser.add_argument("--model-dir", type=Path, default=REPO / "var" / "models", help="model files (fetched here)")
    parser.add_argument("--peers-venv", type=Path, default=REPO / "var" / "peers-venv", help="the peers' venv")
    parser.add_argument("--no-install", action="store_true", help="use the peers' venv as it is")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds for a server to get ready")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="HTTP timeout per request, seconds")
    parser.add_argument("--max-seconds", type=float, help="abort after this long (default 3600; quick 900)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON results")
    parser.add_argument("--logs", type=Path, default=RESULTS.with_name("peers-logs"), help="server logs copied here")
    parser.add_argument("--probe", metavar="URL", help=argparse.SUPPRESS)  # the liveness prober subprocess
    args = parser.parse_args(argv)
    defaults = {"repeat": (8, 3), "rounds": (2, 1), "min_requests": (4, 1), "throughput_seconds": (30.0, 10.0)}
    defaults |= {"health_seconds": (10.0, 4.0), "max_seconds": (3600.0, 900.0), "health_clients": (8, 4)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.cases = args.cases or list(QUICK_CASES if args.quick else CASES)
    args.servers = args.servers or [key for key in SERVERS if not (args.quick and key in ("lpa-nice0", "lpa-unit"))]
    for case in [*args.cases, args.health_case]:
        model, _, size = case.partition(":")
        if model not in CATALOG.manifests or not size.isdigit():
            parser.error(f"bad case {case!r}: MODEL:SIZE with a catalog model")
    return args


def prepare_images(cases: Sequence[str], workdir: Path) -> dict[str, Path]:
    images = {}
    for case in cases:
        size = int(case.split(":")[1])
        path = workdir / f"input-{size}.png"
        if not path.exists():
            path.write_bytes(wo.test_image(size))
        images[case] = path
    return images


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    busy = wo.cpu_busy_fraction()
    load_before = os.getloadavg()
    if busy > 0.10:
        log(f"warning: CPUs {busy:.0%} busy (load average {load_before[0]:.2f}) before the run: numbers are skewed")
    names = sorted({case.split(":")[0] for case in [*args.cases, args.health_case]})
    fetch_models(CATALOG, names, ModelStore(args.model_dir), progress=False)
    workdir = Path(tempfile.mkdtemp(prefix="lpa-peers-"))
    images = prepare_images([*args.cases, args.health_case], workdir)
    needs_peers = any(SERVERS[key].needs_peer_env for key in args.servers)
    peer, skip_reason = ensure_peer_env(args.peers_venv, install=not args.no_install) if needs_peers else (None, "")
    ctx = Context(
        model_dir=args.model_dir.resolve(),
        intra_op_threads=args.intra_op_threads,
        workdir=workdir,
        peer=peer,
        capacity=args.capacity,
        queue=args.queue,
        inference_niceness=args.inference_niceness,
        catalog_capabilities={name: CATALOG.get(name).capability for name in CATALOG.manifests},
        skip_reason=skip_reason,
    )
    report: dict[str, Any] = {
        "machine": {**wo.machine(), "peers": peer.versions if peer else None, "appliance_changes": appliance_changes()},
        "cpu_busy_before_run": busy,
        "load_average_before_run": load_before,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "probe"},
        "concurrency": list(CONCURRENCY),
        "peers_skip_reason": skip_reason or None,
        "servers": [],
    }
    log("floor: in-process, this venv")
    report["floor"] = run_floor(sys.executable, args, ctx, images, full=True)
    if peer is not None:
        log("floor: latency in the peers' venv (calibration)")
        try:
            report["floor_peers_venv"] = run_floor(peer.python, args, ctx, images, full=False)
        except BenchError as exc:
            report["floor_peers_venv"] = {"error": str(exc)}
    for key in args.servers:
        if time.monotonic() - started > args.max_seconds:
            report["servers"].append({"key": key, "server": key, "status": "skipped", "reason": "--max-seconds"})
            continue
        report["servers"].append(bench_server(key, args, images, ctx))
    keep_logs(workdir, args.logs)
    shutil.rmtree(workdir, ignore_errors=True)
    report["wall_seconds"] = time.monotonic() - started
    report["load_average_after_run"] = os.getloadavg()
    return report


def appliance_changes() -> list[str]:
    """Uncommitted changes under appliance/ (the lpa serve measured is the working tree's)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", "appliance", "models"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=REPO,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ["(git status failed)"]
    return out.stdout.splitlines()


def keep_logs(workdir: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for path in workdir.glob("*.log"):
        shutil.copy(path, destination / path.name)


def prober(args: argparse.Namespace) -> int | None:
    """``--probe``: this process is the liveness prober of a run."""
    if not args.probe:
        return None
    return probe_main(args.probe, args.health_seconds, args.output)


def finish(args: argparse.Namespace, report: dict[str, Any]) -> int:
    report["summary"] = print_report(report)
    wo.save(report, args.output)
    print(f"\nraw numbers: {args.output}; server logs: {args.logs} (whole run {report['wall_seconds']:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main("peers", argv, parse_args, run, finish, prober=prober, program="bench/peers/run.py")


if __name__ == "__main__":
    sys.exit(main())
