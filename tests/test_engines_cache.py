"""Real TensorRT engine builds on a CPU (TensorRT-RTX, ahead of time) into the verified, keyed cache."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from appliance.catalog import load_catalog
from appliance.config import load_node_text
from appliance.engines.cache import EngineCache
from appliance.engines.plan import GpuTarget, PlannedEngine, build_plan
from appliance.engines.settings import EngineSettings
from appliance.modelstore import ModelStore
from appliance.resources import bundled_catalog_dir

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (dev dependency) builds engines without a GPU")

NODE = '[[models]]\nmodel = "waifu2x-upconv7"\ncapability = "upscale"\n'
L4 = GpuTarget("NVIDIA L4", 8, 9)


def _plan(model_dir: Path, *, precision: str = "fp16", target: GpuTarget = L4) -> list[PlannedEngine]:
    node = load_node_text(NODE, source="n")
    catalog = load_catalog(bundled_catalog_dir())
    sha = ModelStore(model_dir).expected_sha256(catalog.get("waifu2x-upconv7"))
    assert sha is not None
    return build_plan(
        node, catalog, [target], onnx_sha256={"waifu2x-upconv7": sha}, settings=EngineSettings(precision=precision)
    )  # type: ignore[arg-type]


def _onnx(model_dir: Path) -> Path:
    return ModelStore(model_dir).verified_path(load_catalog(bundled_catalog_dir()).get("waifu2x-upconv7"))


def test_build_then_present_then_refuse_corruption(model_dir: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, flavour="tensorrt-rtx")
    engine = _plan(model_dir)[0]
    assert cache.refusal(engine) == "not built"
    built = cache.build(engine, _onnx(model_dir))
    assert built.outcome == "built", built.reason
    record = json.loads(built.path.with_suffix(".json").read_text())
    assert record["tensorrt"].startswith("tensorrt-rtx 1.7") and record["key"]["compute_capability"] == "8.9"
    assert record["engine_bytes"] == built.path.stat().st_size > 100_000
    assert cache.build(engine, _onnx(model_dir)).outcome == "present"

    data = bytearray(built.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    built.path.write_bytes(bytes(data))
    assert "do not match the sha256" in (cache.refusal(engine) or "")
    assert cache.build(engine, _onnx(model_dir)).outcome == "built"  # rebuilt
    assert cache.refusal(engine) is None


def test_record_for_another_key_is_refused(model_dir: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, flavour="tensorrt-rtx")
    engine = _plan(model_dir)[0]
    built = cache.build(engine, _onnx(model_dir))
    record_path = built.path.with_suffix(".json")
    record = json.loads(record_path.read_text())
    record["tensorrt"] = "tensorrt-rtx 0.9"
    record_path.write_text(json.dumps(record))
    assert "record's tensorrt does not match" in (cache.refusal(engine) or "")


def test_each_key_gets_its_own_engine_and_prune_drops_the_rest(model_dir: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, flavour="tensorrt-rtx")
    fp16, fp32 = _plan(model_dir)[0], _plan(model_dir, precision="fp32")[0]
    assert cache.path_for(fp16) != cache.path_for(fp32)
    for engine in (fp16, fp32):
        assert cache.build(engine, _onnx(model_dir)).outcome == "built"
    assert cache.prune([fp16]) == [cache.path_for(fp32)]
    assert cache.path_for(fp16).is_file() and not cache.path_for(fp32).with_suffix(".json").exists()


def test_failed_build_leaves_nothing(model_dir: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, flavour="tensorrt-rtx")
    engine = _plan(model_dir, target=GpuTarget("NVIDIA H100 80GB HBM3", 9, 0))[0]
    result = cache.build(engine, _onnx(model_dir))
    assert result.outcome == "failed" and "cannot target sm_90" in result.reason
    assert list(tmp_path.glob("*.engine")) == [] and list(tmp_path.glob("*.json")) == []


def test_two_builders_of_one_key_build_it_once(model_dir: Path, tmp_path: Path) -> None:
    engine = _plan(model_dir)[0]
    outcomes: list[str] = []

    def build() -> None:
        outcomes.append(EngineCache(tmp_path, flavour="tensorrt-rtx").build(engine, _onnx(model_dir)).outcome)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["built", "present"]


def test_cli_build_and_verify(model_dir: Path, tmp_path: Path) -> None:
    node = tmp_path / "node.toml"
    node.write_text(f'[worker]\nmodel_dir = "{model_dir}"\n{NODE}[engines]\ncache_dir = "{tmp_path / "cache"}"\n')
    lpa = [sys.executable, "-m", "appliance.cli", "engines"]
    built = subprocess.run(
        [*lpa, "build", "--node", str(node), "--gpu", "NVIDIA L4:8.9"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "1 of 1 engine(s) ready with tensorrt-rtx" in built.stdout
    verify = [*lpa, "verify", "--node", str(node), "--gpu", "NVIDIA L4:8.9"]
    assert subprocess.run(verify, capture_output=True, text=True, timeout=60, check=False).returncode == 0
    engine = next((tmp_path / "cache").glob("*.engine"))
    engine.write_bytes(engine.read_bytes()[:-1])
    broken = subprocess.run(verify, capture_output=True, text=True, timeout=60, check=False)
    assert broken.returncode == 1 and "CORRUPT" in broken.stdout
