"""The floor: the same work with no server at all, in this process, on a raw onnxruntime session.

Per case: ``n`` sequential samples of PNG decode → pipeline (pre-processing, ``session.run``, post-processing) →
PNG encode, with ``session.run`` timed on its own (``raw``); then the same work from 1, 4, 8 threads sharing the
session (onnxruntime's ``run`` is thread-safe), bounded like the servers' throughput runs. Writes JSON, and each
case's output PNG (the reference every server's answer is compared with).

Runs in either virtual environment (the driver runs it in the appliance's and, for calibration, in the peers').
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadgen import Results, Tickets, concurrent, summary
from serving import Model


class TimedBackend:
    """The backend, with each ``run`` timed (sequential samples only)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[Any]:
        started = time.perf_counter()
        try:
            return list(self.inner.run(feeds, outputs))
        finally:
            self.seconds.append(time.perf_counter() - started)


def measure_case(model: Model, png: bytes, args: argparse.Namespace, reference: Path | None) -> dict[str, Any]:
    timed = TimedBackend(model.pipeline.backend)
    model.pipeline.backend = timed
    full_ms: list[float] = []
    raw_ms: list[float] = []
    for i in range(args.warmup + args.repeat):
        timed.seconds.clear()
        started = time.perf_counter()
        out = model.png(png)
        elapsed = time.perf_counter() - started
        if i == 0 and reference is not None:
            reference.write_bytes(out)
        if i >= args.warmup:
            full_ms.append(elapsed * 1000.0)
            raw_ms.append(sum(timed.seconds) * 1000.0)
        time.sleep(args.pause)
    model.pipeline.backend = timed.inner
    result: dict[str, Any] = {"latency": summary(full_ms), "raw_run": summary(raw_ms), "throughput": {}}
    for concurrency in args.concurrency:

        def worker(tickets: Tickets, results: Results) -> None:
            while tickets.take():
                started = time.perf_counter()
                try:
                    model.png(png)
                    results.record(True, time.perf_counter() - started)
                except Exception as exc:  # counted, never raised: the other threads go on
                    results.record(False, time.perf_counter() - started, repr(exc))

        requests = max(args.rounds * concurrency, args.min_requests)
        result["throughput"][str(concurrency)] = concurrent(
            worker, concurrency, requests, args.max_seconds, args.join_seconds
        )
        time.sleep(args.pause)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description="The in-process floor for bench/peers (see run.py).")
    parser.add_argument("--cases", nargs="+", required=True, metavar="MODEL:SIZE:IMAGE")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--min-requests", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--join-seconds", type=float, default=300.0)
    parser.add_argument("--reference-dir", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    models: dict[str, Model] = {}
    report: dict[str, Any] = {"python": sys.version.split()[0], "cases": {}}
    for case in args.cases:
        name, size, image = case.split(":", 2)
        model = models.get(name) or models.setdefault(
            name, Model(name, args.model_dir, intra_op_threads=args.intra_op_threads)
        )
        reference = args.reference_dir / f"{name}-{size}.png" if args.reference_dir else None
        report["cases"][f"{name}:{size}"] = measure_case(model, Path(image).read_bytes(), args, reference)
    import numpy as np  # noqa: PLC0415 (versions of this environment, for the record)
    import onnxruntime as ort  # noqa: PLC0415

    report["numpy"], report["onnxruntime"] = np.__version__, ort.__version__
    args.output.write_text(json.dumps(report), encoding="utf-8")  # NaN stays NaN: the driver reads it back
    return 0


if __name__ == "__main__":
    sys.exit(main())
