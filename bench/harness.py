"""What every bench script does the same way: start a real ``lpa serve`` and wait for it, load it back to back,
and run as a command (``main``).

Standard library and httpx only: bench/peers/loadgen.py imports it in the peers' virtual environment too. The
scripts import it as ``harness``: ``python bench/<script>.py`` puts bench/ first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx

__all__ = [
    "BenchError",
    "Served",
    "back_to_back",
    "bench_main",
    "free_port",
    "join_all",
    "log",
    "lpa_command",
    "lpa_serve",
    "node_file",
    "percentile",
    "stop",
    "tail",
    "wait_healthy",
]

Report = dict[str, Any]


class BenchError(RuntimeError):
    """The benchmark cannot go on (missing model, server did not start, deadline passed)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values. With n samples, p99 is the max when n < 100."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def join_all(threads: Sequence[threading.Thread], seconds: float) -> None:
    """Join every thread within ``seconds`` in all (they are daemons: a stuck one cannot keep the process)."""
    end = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))


# --- lpa serve -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lpa_command() -> list[str]:
    script = Path(sys.executable).parent / "lpa"
    return [str(script)] if script.exists() else [sys.executable, "-m", "appliance.cli"]


def node_file(worker: Mapping[str, Any], models: Sequence[Mapping[str, Any]]) -> str:
    """A node file: ``[worker]`` and one ``[[models]]`` table per model, keys in the order given (None: left out).

    Strings and paths are written as JSON strings (valid TOML), booleans as true/false, mappings as inline tables.
    """

    def table(entries: Mapping[str, Any]) -> list[str]:
        return [f"{key} = {_toml_value(value)}" for key, value in entries.items() if value is not None]

    lines = ["[worker]", *table(worker), ""]
    for model in models:
        lines += ["[[models]]", *table(model), ""]
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {_toml_value(v)}" for key, v in value.items()) + " }"
    return str(value)


class Served(NamedTuple):
    """A running ``lpa serve``: its base URL, its process and the file its output goes to."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def lpa_serve(
    node_text: Callable[[str], str],
    workdir: Path,
    *,
    cpu_only: bool,
    startup_timeout: float,
    explain: Callable[[subprocess.Popen[bytes], Path], str] | None = None,
) -> Iterator[Served]:
    """A real ``lpa serve`` of the node file ``node_text(listen)`` on a free loopback port, healthy; stopped (SIGINT,
    then SIGKILL) when the block ends. With ``explain``, a BenchError or an HTTP error, while it starts or in the
    block, is raised again as a BenchError followed by ``explain(process, log file)``."""
    listen = f"127.0.0.1:{free_port()}"
    node = workdir / "node.toml"
    node.write_text(node_text(listen), encoding="utf-8")
    server_log = workdir / "server.log"
    command = [*lpa_command(), "serve", "--node", str(node), "--listen", listen]
    if cpu_only:
        command.append("--cpu-only")
    with server_log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        base_url = f"http://{listen}"
        try:
            wait_healthy(base_url, process, server_log, startup_timeout)
            yield Served(base_url, process, server_log)
        except (BenchError, httpx.HTTPError) as exc:
            if explain is None:
                raise
            raise BenchError(f"{exc}\n{explain(process, server_log)}") from exc
        finally:
            stop(process)


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], server_log: Path, timeout: float) -> None:
    started = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=2.0, trust_env=False) as client:
        while time.monotonic() - started < timeout:
            if process.poll() is not None:
                raise BenchError(f"lpa serve exited with {process.returncode}:\n{tail(server_log)}")
            try:
                status = client.get("/health").json().get("status")
            except (httpx.HTTPError, ValueError):
                status = None
            if status == "OK":
                log(f"server healthy after {time.monotonic() - started:.1f} s")
                return
            if status == "ERROR":
                models = client.get("/models").text
                raise BenchError(f"a model failed to load: {models}\n{tail(server_log)}")
            time.sleep(0.1)
    raise BenchError(f"server not healthy after {timeout:g} s:\n{tail(server_log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# --- load --------------------------------------------------------------------------------------------------------


def back_to_back(
    base_url: str,
    send: Callable[[httpx.Client], httpx.Response | None],
    answered: Callable[[httpx.Response | None, float], None],
    *,
    concurrency: int,
    seconds: float,
    min_requests: int,
    max_seconds: float,
    request_timeout: float,
) -> float:
    """``concurrency`` clients, each on a keep-alive connection of its own, ``send`` back to back for ``seconds`` and
    at least ``min_requests`` requests, none after ``max_seconds`` (a slow model stops at the cap even below the
    minimum); the requests still in flight then are finished. Each answer (None: a transport error) goes, with its
    seconds, to ``answered``, in the client's thread. Returns the seconds from the start until the clients ended."""
    issued = 0
    lock = threading.Lock()
    started = time.perf_counter()

    def ticket() -> bool:
        nonlocal issued
        with lock:
            elapsed = time.perf_counter() - started
            if elapsed >= max_seconds or (elapsed >= seconds and issued >= min_requests):
                return False
            issued += 1
            return True

    def client_loop() -> None:
        with httpx.Client(base_url=base_url, timeout=request_timeout, trust_env=False) as client:
            while ticket():
                sent = time.perf_counter()
                response = send(client)
                answered(response, time.perf_counter() - sent)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    join_all(threads, max_seconds + request_timeout)
    return time.perf_counter() - started


# --- main --------------------------------------------------------------------------------------------------------


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the context managers and finally blocks: servers are stopped


def bench_main(
    name: str,
    argv: Sequence[str] | None,
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], Report],
    finish: Callable[[argparse.Namespace, Report], int],
    *,
    prober: Callable[[argparse.Namespace], int | None] | None = None,
    program: str | None = None,
) -> int:
    """A bench script's ``main``: SIGTERM unwinds it (its servers are stopped); where ``prober(args)`` gives an exit
    status, this process was the script's own prober subprocess; a BenchError from ``run(args)`` prints
    ``<name>: error: …`` and exits 1. Otherwise the report gets the command line (``program`` and the arguments)
    and ``finish(args, report)`` saves and prints it and gives the exit status."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(argv)
    if prober is not None and (status := prober(args)) is not None:
        return status
    try:
        report = run(args)
    except BenchError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    report["command"] = [program or Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
    return finish(args, report)
