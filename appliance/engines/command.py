"""``lpa engines plan``: the engines this host (or the GPUs named with --gpu) needs."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from appliance.catalog import Catalog
from appliance.config import Node
from appliance.engines.plan import GpuTarget, PlanError, build_plan, distinct_targets
from appliance.gpu import probe_gpus
from appliance.modelstore import ModelStore

__all__ = ["parse_gpu", "plan_command"]

_GPU = re.compile(r"^(?P<name>.+):(?P<major>[0-9]+)\.(?P<minor>[0-9]+)$")


def parse_gpu(text: str) -> GpuTarget:
    """``"NVIDIA GeForce RTX 4090:8.9"`` → a target; raises ValueError with the expected form."""
    found = _GPU.match(text)
    if not found:
        raise ValueError(f"--gpu {text!r} must look like 'NVIDIA L4:8.9' (name, colon, compute capability)")
    return GpuTarget(found["name"], int(found["major"]), int(found["minor"]))


def plan_command(node: Node, catalog: Catalog, gpus: Sequence[str]) -> int:
    if gpus:
        targets = [parse_gpu(text) for text in gpus]
    else:
        probe = probe_gpus()
        targets = distinct_targets(probe.gpus)
        if not targets:
            print(
                f"no GPU ({probe.problem}): no engines to build; models run on onnxruntime. "
                "Name GPUs with --gpu 'NVIDIA L4:8.9' to plan for other hosts."
            )
            return 0
    store = ModelStore(node.worker.model_path)
    hashes = {}
    for entry in node.models:
        expected = store.expected_sha256(catalog.get(entry.model))
        if expected is None:
            print(f"lpa engines plan: model {entry.model!r} has no pinned sha256 yet: fetch it first", file=sys.stderr)
            return 1
        hashes[entry.model] = expected
    try:
        plan = build_plan(node, catalog, targets, onnx_sha256=hashes, settings=node.engines)
    except PlanError as exc:
        print(f"lpa engines plan: {exc}", file=sys.stderr)
        return 2
    print(f"{'model':26} {'gpu':26} {'sm':5} {'precision':9} {'opt':3} {'compatibility':24} profiles (min → opt → max)")
    for engine in plan:
        shapes = "; ".join(
            f"{p.input} {'x'.join(map(str, p.min))} → {'x'.join(map(str, p.opt))} → {'x'.join(map(str, p.max))}"
            for p in engine.key.profiles
        )
        print(
            f"{engine.model:26} {engine.gpu.name:26} {engine.gpu.compute_capability:5} {engine.key.precision:9} "
            f"{engine.key.optimization_level:<3} {engine.key.hardware_compatibility:24} {shapes}"
        )
    print(f"{len(plan)} engine(s) for {len(targets)} GPU model(s)")
    return 0
