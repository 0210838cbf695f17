"""``lpa engines plan|build|list|verify|prune``: the engines this host (or the GPUs named with --gpu) needs."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from appliance.atomic import sha256_file
from appliance.catalog import Catalog
from appliance.config import Node
from appliance.engines.builder import available_flavour
from appliance.engines.cache import EngineCache
from appliance.engines.plan import GpuTarget, PlanError, PlannedEngine, build_plan, distinct_targets
from appliance.gpu import probe_gpus
from appliance.modelstore import ModelStore

__all__ = ["engines_command", "parse_gpu"]

_GPU = re.compile(r"^(?P<name>.+):(?P<major>[0-9]+)\.(?P<minor>[0-9]+)$")


def parse_gpu(text: str) -> GpuTarget:
    """``"NVIDIA GeForce RTX 4090:8.9"`` → a target; raises ValueError with the expected form."""
    found = _GPU.match(text)
    if not found:
        raise ValueError(f"--gpu {text!r} must look like 'NVIDIA L4:8.9' (name, colon, compute capability)")
    return GpuTarget(found["name"], int(found["major"]), int(found["minor"]))


def _plan(node: Node, catalog: Catalog, gpus: Sequence[str]) -> tuple[list[PlannedEngine], str | None]:
    """The plan for the named GPUs, else this host's; (plan, None) or ([], why there is nothing to plan)."""
    if gpus:
        targets = [parse_gpu(text) for text in gpus]
    else:
        probe = probe_gpus()
        targets = distinct_targets(probe.gpus)
        if not targets:
            return [], (
                f"no GPU ({probe.problem}): no engines to build; models run on onnxruntime. "
                "Name GPUs with --gpu 'NVIDIA L4:8.9' to plan for other hosts."
            )
    store = ModelStore(node.worker.model_path)
    hashes = {}
    for entry in node.models:
        expected = store.expected_sha256(catalog.get(entry.model))
        if expected is None:
            raise PlanError(f"model {entry.model!r} has no pinned sha256 yet: fetch it first")
        hashes[entry.model] = expected
    return build_plan(node, catalog, targets, onnx_sha256=hashes, settings=node.engines), None


def _shapes(engine: PlannedEngine) -> str:
    return "; ".join(
        f"{p.input} {'x'.join(map(str, p.min))} → {'x'.join(map(str, p.opt))} → {'x'.join(map(str, p.max))}"
        for p in engine.key.profiles
    )


def engines_command(node: Node, catalog: Catalog, action: str, gpus: Sequence[str], *, progress: bool = True) -> int:
    """``lpa engines plan|build|list|verify|prune``."""
    try:
        plan, nothing = _plan(node, catalog, gpus)
    except PlanError as exc:
        print(f"lpa engines {action}: {exc}", file=sys.stderr)
        return 2
    if action == "plan":
        return _print_plan(plan, nothing)
    flavour = available_flavour()
    if flavour is None:
        print(f"lpa engines {action}: neither TensorRT nor TensorRT-RTX is installed", file=sys.stderr)
        return 2
    cache = EngineCache(Path(node.engines.cache_dir).expanduser(), flavour=flavour)
    match action:
        case "build":
            return _build(node, catalog, cache, plan, nothing, progress=progress)
        case "prune":
            for path in cache.prune(plan):
                print(f"removed {path}")
            return 0
        case _:  # list, verify
            return _list(cache, verify=action == "verify")


def _print_plan(plan: list[PlannedEngine], nothing: str | None) -> int:
    if nothing:
        print(nothing)
        return 0
    print(f"{'model':26} {'gpu':26} {'sm':5} {'precision':9} {'opt':3} {'compatibility':24} profiles (min → opt → max)")
    for engine in plan:
        print(
            f"{engine.model:26} {engine.gpu.name:26} {engine.gpu.compute_capability:5} {engine.key.precision:9} "
            f"{engine.key.optimization_level:<3} {engine.key.hardware_compatibility:24} {_shapes(engine)}"
        )
    print(f"{len(plan)} engine(s) for {len({e.gpu for e in plan})} GPU model(s)")
    return 0


def _build(
    node: Node, catalog: Catalog, cache: EngineCache, plan: list[PlannedEngine], nothing: str | None, *, progress: bool
) -> int:
    if nothing:
        print(nothing)
        return 0
    store = ModelStore(node.worker.model_path)
    results = []
    for engine in tqdm(plan, desc="engines", unit="engine", disable=not progress):
        results.append(cache.build(engine, store.verified_path(catalog.get(engine.model))))
    print(f"{'model':26} {'gpu':26} {'outcome':8} {'seconds':>8}  engine / reason")
    for result in results:
        detail = result.reason if result.outcome == "failed" else str(result.path)
        print(
            f"{result.engine.model:26} {result.engine.gpu.name:26} {result.outcome:8} {result.seconds:8.1f}  {detail}"
        )
    failed = sum(r.outcome == "failed" for r in results)
    print(f"{len(results) - failed} of {len(results)} engine(s) ready with {cache.tensorrt}")
    return 1 if failed else 0


def _list(cache: EngineCache, *, verify: bool) -> int:
    bad = 0
    for path, record in cache.records():
        verdict = ""
        if verify:
            intact = path.is_file() and sha256_file(path) == record.get("engine_sha256")
            verdict = "ok" if intact else "CORRUPT"
            bad += not intact
        key = record.get("key", {})
        print(
            f"{record.get('model', '?'):26} {key.get('gpu_name', '?'):26} {key.get('precision', '?'):9} "
            f"{record.get('tensorrt', '?'):26} {record.get('engine_bytes', 0):>10} {verdict:8} {path.name}"
        )
    return 1 if bad else 0
