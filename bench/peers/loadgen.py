"""Bounded load: the ticket counter and statistics shared by the driver (HTTP) and the floor (in process).

Standard library and bench/harness.py only: the floor runs it in either virtual environment.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
if str(BENCH) not in sys.path:  # bench/harness.py, when floor.py runs this from bench/peers
    sys.path.insert(0, str(BENCH))

from harness import percentile  # noqa: E402

__all__ = ["Results", "Tickets", "concurrent", "percentile", "summary"]


def summary(samples_ms: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(samples_ms),
        "p50_ms": percentile(samples_ms, 50),
        "p99_ms": percentile(samples_ms, 99),
        "max_ms": max(samples_ms, default=math.nan),
        "samples_ms": list(samples_ms),
    }


class Tickets:
    """Hands out at most ``requests`` tickets, and none after ``max_seconds`` (the duration cap)."""

    def __init__(self, requests: int, max_seconds: float) -> None:
        self.requests, self.max_seconds = requests, max_seconds
        self.issued = 0
        self.started = time.perf_counter()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.issued >= self.requests or time.perf_counter() - self.started >= self.max_seconds:
                return False
            self.issued += 1
            return True

    @property
    def capped(self) -> bool:
        return self.issued < self.requests


@dataclass
class Results:
    ok: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    last_done: float = 0.0
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, ok: bool, seconds: float, error: str = "") -> None:
        with self._lock:
            self.last_done = time.perf_counter()
            if ok:
                self.ok += 1
                self.latencies_ms.append(seconds * 1000.0)
            else:
                self.failed += 1
                if error and len(self.errors) < 5:
                    self.errors.append(error)


def concurrent(
    worker: Callable[[Tickets, Results], None], concurrency: int, requests: int, max_seconds: float, join_s: float
) -> dict[str, Any]:
    """``concurrency`` threads run ``worker`` (which sends while ``tickets.take()``) until the tickets run out;
    the requests in flight then are finished and counted. ok/s = 200s over first send → last answer."""
    tickets, results = Tickets(requests, max_seconds), Results()
    threads = [threading.Thread(target=worker, args=(tickets, results), daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + max_seconds + join_s
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    elapsed = (results.last_done or time.perf_counter()) - tickets.started
    return {
        "concurrency": concurrency,
        "requests_planned": requests,
        "requests": tickets.issued,
        "duration_capped": tickets.capped,
        "ok": results.ok,
        "failed": results.failed,
        "errors": results.errors,
        "seconds": elapsed,
        "ok_per_s": results.ok / elapsed if elapsed > 0 else math.nan,
        "latency_p50_ms": percentile(results.latencies_ms, 50),
        "latency_p99_ms": percentile(results.latencies_ms, 99),
        "stuck_threads": sum(thread.is_alive() for thread in threads),
    }
