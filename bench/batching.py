"""Does dynamic batching pay? Throughput and latency of a real ``lpa serve`` at concurrency 4 and 8, per model,
with batching off and on; and, first, what one batched graph call costs per image against single ones.

``raw`` phase (in process, onnxruntime as the worker builds it): for N in the concurrencies, N single runs and one
run of a batch of N, on the tensors the pipelines really feed (waifu2x: a 270² tile; ppocr: 512²), alternated
``--raw-repeat`` times; the table shows the median milliseconds per image of each. Batching can only pay where a
batched call costs less per image.

``http`` phase: for each concurrency C, three servers (node files that differ only in the model entries):

- ``serial``: capacity 1, queue C: the node file's default shape, one inference at a time (batching off);
- ``parallel``: capacity C, queue C: C inferences at once on one onnxruntime session (batching off);
- ``batched``: capacity C, queue C, ``batch = { max_size = C, max_wait_ms = --max-wait-ms }``.

C clients send back to back (go-livepeer's multipart, a fixed test picture) for ``--seconds`` and at least
``--min-requests`` requests; ``ok/s`` counts 200 answers, p50/p99 are client-side latencies of those. The batch
sizes come from the worker's own ``lpa_batch_size`` histogram (scraped before and after each measurement). The
configurations run in ``--rounds`` interleaved rounds (round 1: serial, parallel, batched; round 2: the same ...),
so a slow spell of a shared host hits all of them; the tables show the median of the rounds.

Batching "pays" for a model at a concurrency when the batched server's throughput is at least ``--pays-above``
(default 1.10, i.e. +10 %) times the better of the two unbatched ones. Raw numbers and a machine description go
to ``bench/results/batching.json`` (git-ignored). Loopback only; bounded by request counts, timeouts and
``--max-seconds``.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import statistics
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
import numpy as np
import worker_overhead as wo

from appliance.backends import create_backend
from appliance.config import WorkerSettings
from appliance.modelstore import ModelStore

DEFAULT_MODELS = ("waifu2x-upconv7", "ppocr-v4-det")
# One full 270² tile per request for waifu2x (256 + 2 × 7 border); ppocr resizes the longer side to 512 anyway.
DEFAULT_SIZES = {"waifu2x-upconv7": 256, "waifu2x-cunet": 256, "ppocr-v4-det": 512}
CONFIGS = ("serial", "parallel", "batched")
RESULTS = Path(__file__).resolve().parent / "results" / "batching.json"
# What each pipeline feeds its graph for those pictures (waifu2x: the tile plus its 7-pixel border each side).
NETWORK_INPUTS = {
    "waifu2x-upconv7": (1, 3, 270, 270),
    "waifu2x-cunet": (1, 3, 292, 292),
    "ppocr-v4-det": (1, 3, 512, 512),
}

_BATCH = re.compile(r'^lpa_batch_size_(sum|count)\{model="([^"]+)"\} ([0-9.e+-]+)$')


def node_toml(config: str, concurrency: int, models: Sequence[str], args: argparse.Namespace, listen: str) -> str:
    worker = {
        "listen": listen,
        "model_dir": args.model_dir,
        "intra_op_threads": args.intra_op_threads,
        "inference_niceness": args.inference_niceness,
        "log_level": "warning",
    }
    served = {
        "capacity": 1 if config == "serial" else concurrency,
        "queue": concurrency,
        "warm": True,
        "batch": {"max_size": concurrency, "max_wait_ms": args.max_wait_ms} if config == "batched" else None,
    }
    return harness.node_file(
        worker, [{"model": name, "capability": wo.CATALOG.get(name).capability, **served} for name in models]
    )


def batch_metrics(client: httpx.Client) -> dict[str, dict[str, float]]:
    """{"sum": {model label: rows}, "count": {model label: runs}} from the worker's lpa_batch_size histogram."""
    return wo.server_metrics(client, _BATCH)


@dataclass
class Cell:
    """One model at one concurrency under one configuration, in one round."""

    ok: int = 0
    busy: int = 0
    other: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    batch_rows: float = math.nan
    batch_runs: float = math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "busy": self.busy,
            "other": self.other,
            "seconds": self.seconds,
            "ok_per_s": self.ok / self.seconds if self.seconds else math.nan,
            "p50_ms": harness.percentile(self.latencies_ms, 50),
            "p99_ms": harness.percentile(self.latencies_ms, 99),
            "mean_batch": self.batch_rows / self.batch_runs if self.batch_runs else math.nan,
            "batch_runs": self.batch_runs,
        }


def measure(base_url: str, name: str, png: bytes, concurrency: int, args: argparse.Namespace) -> Cell:
    """``concurrency`` clients back to back for ``--seconds`` and at least ``--min-requests`` requests."""
    cell, lock = Cell(), threading.Lock()

    def record(response: httpx.Response | None, seconds: float) -> None:
        with lock:
            if response is not None and response.status_code == 200:
                cell.ok += 1
                cell.latencies_ms.append(wo.ms(seconds))
            elif response is not None and wo.is_busy(response):
                cell.busy += 1
            else:
                cell.other += 1

    with httpx.Client(base_url=base_url, timeout=10.0, trust_env=False) as probe:
        # Untimed warm-up: every slot (and the batcher) once at full concurrency.
        warm = [threading.Thread(target=wo.try_post, args=(probe, name, png)) for _ in range(concurrency)]
        for thread in warm:
            thread.start()
        harness.join_all(warm, args.request_timeout)
        before = batch_metrics(probe)
        cell.seconds = harness.back_to_back(
            base_url,
            lambda client: wo.try_post(client, name, png),
            record,
            concurrency=concurrency,
            seconds=args.seconds,
            min_requests=args.min_requests,
            max_seconds=args.max_cell_seconds,
            request_timeout=args.request_timeout,
        )
        after = batch_metrics(probe)
    model = wo.label(name)

    def grown(key: str) -> float:
        return after.get(key, {}).get(model, 0.0) - before.get(key, {}).get(model, 0.0)

    if model in after.get("sum", {}) or model in after.get("count", {}):
        cell.batch_rows, cell.batch_runs = grown("sum"), grown("count")
    return cell


def raw_phase(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The graph call alone, in process: N single runs against one run of a batch of N, alternated rep by rep
    (a few seconds apart, so a shared host's slow spells hit both), on the tensors the pipelines really feed."""
    rows = []
    for name in args.models:
        manifest = wo.CATALOG.get(name)
        path = ModelStore(args.model_dir).verified_path(manifest)
        backend = create_backend(path, intra_op_threads=args.intra_op_threads, allow_gpu=False).backend
        tensor = NETWORK_INPUTS[name]
        rng = np.random.default_rng(0)
        singles = [rng.random(tensor, dtype=np.float32) for _ in range(max(args.concurrency))]
        feed, output = manifest.inputs[0].name, manifest.outputs[0].name
        backend.run({feed: np.concatenate(singles)}, [output])  # warm-up at the largest batch, then at 1
        backend.run({feed: singles[0]}, [output])
        samples: dict[int, dict[str, list[float]]] = {n: {"single": [], "batch": []} for n in args.concurrency}
        for _ in range(args.raw_repeat):
            for n in args.concurrency:
                started = time.perf_counter()
                for x in singles[:n]:
                    backend.run({feed: x}, [output])
                samples[n]["single"].append(wo.ms(time.perf_counter() - started) / n)
                stacked = np.concatenate(singles[:n])
                started = time.perf_counter()
                backend.run({feed: stacked}, [output])
                samples[n]["batch"].append(wo.ms(time.perf_counter() - started) / n)
        for n in args.concurrency:
            single, batch = wo.median(samples[n]["single"]), wo.median(samples[n]["batch"])
            rows.append(
                {
                    "model": name,
                    "tensor": list(tensor),
                    "batch": n,
                    "single_ms_per_image": single,
                    "batch_ms_per_image": batch,
                    "batch_over_single": batch / single,
                    "samples": samples[n],
                }
            )
            harness.log(f"raw {name} batch {n}: {single:.1f} ms/image alone, {batch:.1f} ms/image batched")
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    deadline = wo.Deadline(args.max_seconds)
    for name in args.models:
        if not wo.CATALOG.get(name).inputs[0].dynamic_batch:
            raise harness.BenchError(f"{name} has a fixed batch of 1 (its manifest): it cannot batch")
    pngs = {name: wo.test_image(DEFAULT_SIZES.get(name, 256)) for name in args.models}
    busy_before = wo.cpu_busy_fraction()
    harness.log(f"host CPU busy before the run: {busy_before:.0%}")
    raw = raw_phase(args) if "raw" in args.phases else []
    cells: dict[tuple[str, int, str], list[Cell]] = {}
    with tempfile.TemporaryDirectory(prefix="lpa-batching-") as tmp:
        for round_index in range(args.rounds if "http" in args.phases else 0):
            for concurrency in args.concurrency:
                for config in CONFIGS:
                    deadline.check(f"round {round_index + 1}, concurrency {concurrency}, {config}")
                    with harness.lpa_serve(
                        functools.partial(node_toml, config, concurrency, args.models, args),
                        Path(tmp),
                        cpu_only=True,
                        startup_timeout=args.startup_timeout,
                        explain=lambda _, server_log: harness.tail(server_log),
                    ) as (base_url, _, _):
                        for name in args.models:
                            cell = measure(base_url, name, pngs[name], concurrency, args)
                            cells.setdefault((name, concurrency, config), []).append(cell)
                            s = cell.summary()
                            harness.log(
                                f"round {round_index + 1} c={concurrency} {config:8} {name}: "
                                f"{s['ok_per_s']:.2f} ok/s, p50 {s['p50_ms']:.0f} ms, mean batch "
                                f"{wo.fmt(s['mean_batch'], 2)}, busy {cell.busy}, other {cell.other}"
                            )
    busy_after = wo.cpu_busy_fraction()
    rows = []
    for name in args.models if "http" in args.phases else []:
        for concurrency in args.concurrency:
            row: dict[str, Any] = {"model": name, "concurrency": concurrency, "image_size": DEFAULT_SIZES.get(name)}
            for config in CONFIGS:
                summaries = [c.summary() for c in cells[name, concurrency, config]]
                row[config] = {
                    key: statistics.median([s[key] for s in summaries])
                    for key in ("ok_per_s", "p50_ms", "p99_ms", "mean_batch")
                }
                row[config]["rounds"] = summaries
                row[config]["failed"] = sum(s["other"] for s in summaries)
            best_off = max(row["serial"]["ok_per_s"], row["parallel"]["ok_per_s"])
            row["batched_over_best_off"] = row["batched"]["ok_per_s"] / best_off
            row["pays"] = row["batched_over_best_off"] >= args.pays_above
            rows.append(row)
    return {
        "benchmark": "batching",
        "machine": wo.machine(),
        "cpu_busy_before": busy_before,
        "cpu_busy_after": busy_after,
        "load_average": os.getloadavg(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
        "raw": raw,
        "wall_seconds": time.monotonic() - started,
    }


def print_report(report: Mapping[str, Any]) -> None:
    if report["raw"]:
        wo.print_table(
            "The graph call alone (in process, onnxruntime): ms per image, N single runs vs one batch of N (medians)",
            ["model", "tensor", "N", "alone", "batched", "batched / alone"],
            [
                [
                    r["model"],
                    "×".join(map(str, r["tensor"])),
                    str(r["batch"]),
                    wo.fmt(r["single_ms_per_image"]),
                    wo.fmt(r["batch_ms_per_image"]),
                    f"{r['batch_over_single']:.2f}",
                ]
                for r in report["raw"]
            ],
        )
        print()
    if not report["rows"]:
        return
    header = ["model", "C", "config", "ok/s", "p50 ms", "p99 ms", "mean batch", "vs serial"]
    table = []
    for row in report["rows"]:
        serial = row["serial"]["ok_per_s"]
        for config in CONFIGS:
            cell = row[config]
            table.append(
                [
                    row["model"] if config == "serial" else "",
                    str(row["concurrency"]),
                    config,
                    wo.fmt(cell["ok_per_s"], 2),
                    wo.fmt(cell["p50_ms"], 0),
                    wo.fmt(cell["p99_ms"], 0),
                    wo.fmt(cell["mean_batch"], 2),
                    f"{cell['ok_per_s'] / serial:.2f}x",
                ]
            )
    rounds = report["settings"]["rounds"]
    wo.print_table(f"Throughput with and without batching (median of {rounds} rounds)", header, table)
    print()
    verdicts = [
        [
            row["model"],
            str(row["concurrency"]),
            f"{row['batched_over_best_off']:.2f}x",
            "PAYS" if row["pays"] else "does not pay",
        ]
        for row in report["rows"]
    ]
    wo.print_table(
        f"Batched throughput over the better unbatched one (pays at >= {report['settings']['pays_above']:.2f}x)",
        ["model", "C", "batched / best off", "verdict"],
        verdicts,
    )
    busy = report["cpu_busy_before"], report["cpu_busy_after"]
    print(f"\nhost CPU busy before / after: {busy[0]:.0%} / {busy[1]:.0%}; load average {report['load_average']}")
    if max(busy) > 0.10:
        print("warning: the host was busy with other work; the numbers are skewed (ratios less so: interleaved)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput of lpa serve with dynamic batching off and on, at concurrency 4 and 8.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="MODEL")
    parser.add_argument("--phases", nargs="+", choices=("raw", "http"), default=["raw", "http"])
    parser.add_argument("--raw-repeat", type=int, default=5, help="alternations of the raw phase")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[4, 8], metavar="C")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; tables show their median")
    parser.add_argument("--seconds", type=float, default=20.0, help="load time per model and configuration")
    parser.add_argument("--min-requests", type=int, default=16, help="at least this many requests per cell")
    parser.add_argument("--max-cell-seconds", type=float, default=90.0, help="hard stop of one cell")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the batched server's batch.max_wait_ms")
    parser.add_argument("--pays-above", type=float, default=1.10, help="batched / best unbatched throughput")
    parser.add_argument("--model-dir", type=Path, default=wo.DEFAULT_MODEL_DIR)
    parser.add_argument("--intra-op-threads", type=int, default=0, help="0: one per core")
    parser.add_argument(
        "--inference-niceness",
        type=int,
        default=WorkerSettings().inference_niceness,
        help="the server's worker.inference_niceness (default: the node file's)",
    )
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="give up after this long")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def finish(args: argparse.Namespace, report: dict[str, Any]) -> int:
    wo.save(report, args.output)
    print_report(report)
    print(f"\nraw numbers: {args.output} (whole run {report['wall_seconds']:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return harness.bench_main("batching", argv, parse_args, run, finish)


if __name__ == "__main__":
    sys.exit(main())
