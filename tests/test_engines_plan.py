"""The engine build plan and its cache key: one engine per model × GPU model, a key that changes with each input."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.catalog import load_catalog
from appliance.config import load_node_text
from appliance.engines.plan import EngineKey, GpuTarget, PlanError, build_plan, distinct_targets
from appliance.engines.settings import EngineSettings
from appliance.gpu import GpuDevice
from appliance.resources import bundled_catalog_dir

NODE = """
[[models]]
model = "waifu2x-upconv7"
capability = "upscale"
[[models]]
model = "u2netp"
capability = "segmentation"
[[models]]
model = "u2netp"
capability = "segmentation"
model_id = "u2netp-second-id"
"""
HASHES = {"waifu2x-upconv7": "a" * 64, "u2netp": "b" * 64}


def _device(index: int, name: str, major: int, minor: int) -> GpuDevice:
    return GpuDevice(index, f"GPU-{index}", name, major, minor, 24 << 30, 20 << 30, 0, 0)


def test_one_target_per_gpu_model() -> None:
    gpus = [
        _device(0, "NVIDIA GeForce RTX 4090", 8, 9),
        _device(1, "NVIDIA GeForce RTX 4090", 8, 9),
        _device(2, "NVIDIA L4", 8, 9),
    ]
    assert distinct_targets(gpus) == [GpuTarget("NVIDIA GeForce RTX 4090", 8, 9), GpuTarget("NVIDIA L4", 8, 9)]


def test_plan_is_models_times_gpu_models() -> None:
    node = load_node_text(NODE, source="n")
    targets = [GpuTarget("NVIDIA A100-SXM4-80GB", 8, 0), GpuTarget("NVIDIA L4", 8, 9)]
    plan = build_plan(node, load_catalog(bundled_catalog_dir()), targets, onnx_sha256=HASHES, settings=EngineSettings())
    assert [(p.model, p.gpu.name) for p in plan] == [
        ("waifu2x-upconv7", "NVIDIA A100-SXM4-80GB"),
        ("waifu2x-upconv7", "NVIDIA L4"),
        ("u2netp", "NVIDIA A100-SXM4-80GB"),
        ("u2netp", "NVIDIA L4"),
    ]
    waifu = plan[0].key
    assert waifu.precision == "fp16" and waifu.compute_capability == "8.0"
    assert [(p.input, p.min, p.opt, p.max) for p in waifu.profiles] == [
        ("input", (1, 3, 32, 32), (1, 3, 256, 256), (1, 3, 512, 512))
    ]
    name = plan[0].file_name(tensorrt="tensorrt-rtx 1.7.1")
    assert name.startswith("waifu2x-upconv7.nvidia-a100-sxm4-80gb.fp16.") and name.endswith(".engine")


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "c" * 64},
        {"gpu_name": "NVIDIA GeForce RTX 4090"},
        {"compute_capability": "8.6"},
        {"precision": "fp32"},
        {"hardware_compatibility": "ampere-plus"},
        {"optimization_level": 5},
        {"appliance_version": "9.9.9"},
    ],
)
def test_key_digest_changes_with_every_field(change: dict[str, object]) -> None:
    node = load_node_text(NODE, source="n")
    key = build_plan(
        node,
        load_catalog(bundled_catalog_dir()),
        [GpuTarget("NVIDIA L4", 8, 9)],
        onnx_sha256=HASHES,
        settings=EngineSettings(),
    )[0].key
    assert key.digest(tensorrt="tensorrt 10.13") == key.digest(tensorrt="tensorrt 10.13")
    assert key.digest(tensorrt="tensorrt 10.13") != key.digest(tensorrt="tensorrt-rtx 1.7.1")
    changed: EngineKey = dataclasses.replace(key, **change)  # type: ignore[arg-type]
    assert changed.digest(tensorrt="tensorrt 10.13") != key.digest(tensorrt="tensorrt 10.13")


def test_int8_without_calibration_is_refused() -> None:
    node = load_node_text(NODE, source="n")
    with pytest.raises(PlanError, match="calibration"):
        build_plan(
            node,
            load_catalog(bundled_catalog_dir()),
            [GpuTarget("NVIDIA L4", 8, 9)],
            onnx_sha256=HASHES,
            settings=EngineSettings(precision="int8"),
        )


def test_manifest_without_shapes_cannot_be_planned(catalog_dir: Path) -> None:
    node = load_node_text('[[models]]\nmodel = "tiny-style"\ncapability = "style-transfer"\n', source="n")
    with pytest.raises(PlanError, match="no min/opt/max shapes"):
        build_plan(
            node,
            load_catalog(catalog_dir),
            [GpuTarget("NVIDIA L4", 8, 9)],
            onnx_sha256={"tiny-style": "d" * 64},
            settings=EngineSettings(),
        )


def _lpa(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_plans_for_named_gpus_and_says_when_there_are_none() -> None:
    found = _lpa("engines", "plan")  # this host's own GPUs: none on CI machines
    assert found.returncode == 0 and ("no engines to build" in found.stdout or "engine(s) for" in found.stdout)
    named = _lpa("engines", "plan", "--gpu", "NVIDIA GeForce RTX 4090:8.9", "--gpu", "NVIDIA L4:8.9")
    assert named.returncode == 0 and "6 engine(s) for 2 GPU model(s)" in named.stdout
    bad = _lpa("engines", "plan", "--gpu", "L4")
    assert bad.returncode == 2 and "must look like 'NVIDIA L4:8.9'" in bad.stderr
