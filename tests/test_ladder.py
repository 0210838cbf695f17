"""The backend ladder's choice in each situation, with the reasons it gives, on a machine without a GPU.

Real: the engine files (built by TensorRT-RTX from the real waifu2x model, through the engine cache), the cache's
record and sha256 checks, onnxruntime (CPU), and in one test the real TensorRT-RTX refusing to load an engine
without a GPU. Replaced at their boundaries by named doubles, because they cannot exist here: NVML (pynvml,
``tests/test_gpu.py``'s double: an RTX 4090 as GPU 0 and an L4 as GPU 1), onnxruntime-gpu's provider report
(``tests/doubles/onnxruntime_gpu.py``), TensorRT's runtime and CUDA (``tests/doubles/tensorrt.py``,
``tests/doubles/cuda.py``). What these tests prove about GPUs is proven against those doubles only.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient
from PIL import Image

from appliance.backends import BackendChoice, EngineRequest, HostFacts, create_backend, host_facts
from appliance.backends.ladder import predict_backend
from appliance.catalog import load_catalog
from appliance.config import load_node_text
from appliance.doctor import doctor_command
from appliance.engines.cache import EngineCache
from appliance.engines.plan import GpuTarget, PlannedEngine, plan_engine
from appliance.engines.settings import EngineSettings
from appliance.modelstore import ModelStore
from appliance.pipelines import NoOptions, create_pipeline
from appliance.resources import bundled_catalog_dir
from appliance.runtime import Runtime
from appliance.server.app import create_app
from tests.doubles.cuda import FakeGpu, polygraphy_cuda_module
from tests.doubles.onnxruntime_gpu import CPU, CUDA, TRT, OnnxRuntimeGpuDouble
from tests.doubles.tensorrt import EngineSpec, TensorRTDouble
from tests.helpers import golivepeer_multipart, png_bytes
from tests.test_gpu import _nvml_double

pytestmark = pytest.mark.models

MODEL = "waifu2x-upconv7"
L4 = GpuTarget("NVIDIA L4", 8, 9)  # GPU 1 of the NVML double
RTX_4090 = GpuTarget("NVIDIA GeForce RTX 4090", 8, 9)  # GPU 0
NO_GPU = "no GPU (NVML unavailable: NVML Shared Library Not Found)"
CPU_ONLY_REASONS = f"tensorrt: {NO_GPU}; onnxruntime-tensorrt: {NO_GPU}; onnxruntime-cuda: {NO_GPU}; onnxruntime-cpu"


def _request(model_dir: Path, cache_dir: Path, *, sha256: str | None = None) -> EngineRequest:
    manifest = load_catalog(bundled_catalog_dir()).get(MODEL)
    expected = sha256 or ModelStore(model_dir).expected_sha256(manifest)
    assert expected is not None
    return EngineRequest(MODEL, manifest, expected, EngineSettings(cache_dir=str(cache_dir)))


def _planned(request: EngineRequest, target: GpuTarget) -> PlannedEngine:
    return plan_engine(MODEL, request.manifest, target, onnx_sha256=request.onnx_sha256, settings=request.settings)


def _onnx(model_dir: Path) -> Path:
    return ModelStore(model_dir).verified_path(load_catalog(bundled_catalog_dir()).get(MODEL))


@pytest.fixture(scope="module")
def built(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real engines, built once by TensorRT-RTX through the cache: for the L4, for the RTX 4090, and for the L4
    from another ONNX file (the key's sha256 differs; the builder is given the same model)."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (dev dependency) builds engines without a GPU")
    directory = tmp_path_factory.mktemp("engines")
    cache = EngineCache(directory, flavour="tensorrt-rtx")
    request = _request(model_dir, directory)
    engines = {
        "l4": _planned(request, L4),
        "rtx4090": _planned(request, RTX_4090),
        "other-onnx": plan_engine(MODEL, request.manifest, L4, onnx_sha256="0" * 64, settings=request.settings),
    }
    for engine in engines.values():
        result = cache.build(engine, _onnx(model_dir))
        assert result.outcome == "built", result.reason
    return {name: cache.path_for(engine) for name, engine in engines.items()}


def _cache_with(tmp_path: Path, built: dict[str, Path], *names: str) -> Path:
    directory = tmp_path / "engines"
    directory.mkdir(exist_ok=True)
    for name in names:
        for path in (built[name], built[name].with_suffix(".json")):
            shutil.copy(path, directory / path.name)
    return directory


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML sees an RTX 4090 (GPU 0) and an L4 (GPU 1); this worker is the L4's (CUDA_VISIBLE_DEVICES=1)."""
    monkeypatch.setitem(sys.modules, "pynvml", _nvml_double())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _nvml_double(library_present=False))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture
def gpu_runtime(monkeypatch: pytest.MonkeyPatch) -> TensorRTDouble:
    """TensorRT-RTX's runtime and CUDA, as doubles (loading an engine needs a GPU)."""
    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "polygraphy.cuda", polygraphy_cuda_module(gpu))
    double = TensorRTDouble(gpu, "tensorrt-rtx")
    monkeypatch.setitem(sys.modules, double.module_name, double.module())
    return double


def _register(double: TensorRTDouble, engine: Path, model_dir: Path) -> None:
    """Tell the TensorRT double what the real engine file was built from."""
    manifest = load_catalog(bundled_catalog_dir()).get(MODEL)
    profiles = {
        t.name: (tuple(t.min_shape or ()), tuple(t.opt_shape or ()), tuple(t.max_shape or ())) for t in manifest.inputs
    }

    def shapes(inputs: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        n, c, h, w = inputs["input"]
        return {"conv7": (n, c, 2 * h - 28, 2 * w - 28)}

    double.register(engine.read_bytes(), EngineSpec(_onnx(model_dir), profiles, shapes))


def _choose(model_dir: Path, cache_dir: Path, **kwargs: Any) -> BackendChoice:
    request = kwargs.pop("request", None) or _request(model_dir, cache_dir)
    return create_backend(
        _onnx(model_dir), intra_op_threads=1, engine=request, host=host_facts(allow_gpu=True), **kwargs
    )


# --- no GPU -----------------------------------------------------------------------------------------------------


def test_no_gpu_and_a_cpu_onnxruntime_take_the_cpu_with_every_reason(
    no_nvml: None, model_dir: Path, tmp_path: Path
) -> None:
    choice = _choose(model_dir, tmp_path)
    assert choice.backend.name == "onnxruntime-cpu"
    assert choice.reason == (
        f"tensorrt: {NO_GPU}; onnxruntime-tensorrt: provider not in this onnxruntime build; "
        "onnxruntime-cuda: provider not in this onnxruntime build; onnxruntime-cpu"
    )
    assert [rung for rung, _ in choice.steps] == ["tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda"]


def test_no_gpu_with_onnxruntime_gpu_installed_creates_no_gpu_session(
    no_nvml: None, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ort_gpu = OnnxRuntimeGpuDouble()
    ort_gpu.install(monkeypatch)
    choice = _choose(model_dir, tmp_path)
    assert choice.backend.name == "onnxruntime-cpu" and choice.reason == CPU_ONLY_REASONS
    assert [s["providers"] for s in ort_gpu.sessions] == [[CPU]]  # the listed GPU providers were never tried


def test_cpu_only_disables_every_gpu_rung(nvml: None, model_dir: Path, tmp_path: Path) -> None:
    choice = create_backend(_onnx(model_dir), intra_op_threads=1, allow_gpu=False, engine=_request(model_dir, tmp_path))
    disabled = "GPU backends disabled (--cpu-only)"
    assert choice.reason == (
        f"tensorrt: {disabled}; onnxruntime-tensorrt: {disabled}; onnxruntime-cuda: {disabled}; onnxruntime-cpu"
    )


# --- a TensorRT engine in the cache ----------------------------------------------------------------------------


def test_a_valid_engine_for_this_gpu_is_served_by_tensorrt(
    nvml: None, gpu_runtime: TensorRTDouble, model_dir: Path, tmp_path: Path, built: dict[str, Path]
) -> None:
    cache_dir = _cache_with(tmp_path, built, "l4", "rtx4090")
    _register(gpu_runtime, built["l4"], model_dir)
    choice = _choose(model_dir, cache_dir, capacity=2)
    assert choice.backend.name == "tensorrt-rtx" and choice.reason == "tensorrt-rtx" and choice.steps == ()
    assert len(gpu_runtime.contexts) == 2  # one execution context per slot (capacity 2)
    tile = np.random.default_rng(1).random((1, 3, 48, 64), dtype=np.float32)
    ours = choice.backend.run({"input": tile})[0]
    cpu = create_backend(_onnx(model_dir), intra_op_threads=1, allow_gpu=False).backend
    np.testing.assert_allclose(ours, cpu.run({"input": tile})[0], rtol=1e-4, atol=1e-5)


def test_the_real_tensorrt_rtx_cannot_load_an_engine_without_a_gpu_and_the_ladder_moves_on(
    nvml: None, model_dir: Path, tmp_path: Path, built: dict[str, Path]
) -> None:
    """No TensorRT double here: the real TensorRT-RTX and polygraphy, on a machine with no GPU or driver."""
    cache_dir = _cache_with(tmp_path, built, "l4")
    choice = _choose(model_dir, cache_dir)
    assert choice.backend.name == "onnxruntime-cpu"
    (rung, why), *_ = choice.steps
    assert rung == "tensorrt" and why.startswith(f"TensorRT could not deserialize {built['l4'].name}: ")
    assert "cudaError 35" in why or "CUDA" in why, why


def test_an_engine_built_for_another_gpu_is_not_used(
    nvml: None, gpu_runtime: TensorRTDouble, model_dir: Path, tmp_path: Path, built: dict[str, Path]
) -> None:
    cache_dir = _cache_with(tmp_path, built, "rtx4090")
    choice = _choose(model_dir, cache_dir)
    assert choice.reason.startswith(
        f"tensorrt: no engine for NVIDIA L4 sm_89 in the cache (the cached {MODEL} engine(s): "
        "built for NVIDIA GeForce RTX 4090 sm_89); "
    )
    assert choice.backend.name == "onnxruntime-cpu" and gpu_runtime.contexts == []


def test_an_engine_whose_record_names_another_gpu_is_refused_under_this_gpus_name(
    nvml: None, gpu_runtime: TensorRTDouble, model_dir: Path, tmp_path: Path, built: dict[str, Path]
) -> None:
    """The 4090's engine and record copied to the L4's file name: the record, not the name, decides."""
    cache_dir = _cache_with(tmp_path, built, "rtx4090")
    l4_name = built["l4"].name
    (cache_dir / built["rtx4090"].name).rename(cache_dir / l4_name)
    (cache_dir / built["rtx4090"].with_suffix(".json").name).rename((cache_dir / l4_name).with_suffix(".json"))
    _register(gpu_runtime, cache_dir / l4_name, model_dir)
    choice = _choose(model_dir, cache_dir)
    assert choice.steps[0] == (
        "tensorrt",
        f"engine {l4_name} refused: its record's key does not match (built for NVIDIA GeForce RTX 4090 sm_89)",
    )
    assert choice.backend.name == "onnxruntime-cpu" and gpu_runtime.contexts == []


def test_an_engine_from_another_tensorrt_version_is_refused(
    nvml: None,
    gpu_runtime: TensorRTDouble,
    model_dir: Path,
    tmp_path: Path,
    built: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache_dir = _cache_with(tmp_path, built, "l4")
    _register(gpu_runtime, cache_dir / built["l4"].name, model_dir)
    record_path = (cache_dir / built["l4"].name).with_suffix(".json")
    installed = json.loads(record_path.read_text())["tensorrt"]
    # This host upgraded TensorRT-RTX: the key (and so the file name) it looks for is another one.
    monkeypatch.setattr("appliance.engines.cache.tensorrt_label", lambda flavour: "tensorrt-rtx 1.8.0.1")
    choice = _choose(model_dir, cache_dir)
    assert choice.steps[0] == (
        "tensorrt",
        f"no engine for NVIDIA L4 sm_89 in the cache (the cached {MODEL} engine(s): "
        f"built with {installed} (this host has tensorrt-rtx 1.8.0.1))",
    )
    monkeypatch.undo()
    # A record edited to claim another version, under the right name: refused by the record check.
    monkeypatch.setitem(sys.modules, "pynvml", _nvml_double())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    record = json.loads(record_path.read_text())
    record["tensorrt"] = "tensorrt-rtx 1.6.0.0"
    record_path.write_text(json.dumps(record))
    assert (
        "its record's tensorrt does not match (built with tensorrt-rtx 1.6.0.0" in _choose(model_dir, cache_dir).reason
    )


def test_an_engine_built_from_a_changed_onnx_file_is_refused(
    nvml: None, gpu_runtime: TensorRTDouble, model_dir: Path, tmp_path: Path, built: dict[str, Path]
) -> None:
    cache_dir = _cache_with(tmp_path, built, "other-onnx")
    choice = _choose(model_dir, cache_dir)
    assert choice.steps[0] == (
        "tensorrt",
        f"no engine for NVIDIA L4 sm_89 in the cache (the cached {MODEL} engine(s): "
        "built from another ONNX file (sha256 000000000000…))",
    )
    assert choice.backend.name == "onnxruntime-cpu"


def test_a_corrupt_engine_is_refused(
    nvml: None, gpu_runtime: TensorRTDouble, model_dir: Path, tmp_path: Path, built: dict[str, Path]
) -> None:
    cache_dir = _cache_with(tmp_path, built, "l4")
    engine = cache_dir / built["l4"].name
    data = bytearray(engine.read_bytes())
    data[len(data) // 3] ^= 0x01
    engine.write_bytes(bytes(data))
    choice = _choose(model_dir, cache_dir)
    assert choice.steps[0] == (
        "tensorrt",
        f"engine {engine.name} refused: its bytes do not match the sha256 in its record (corrupt)",
    )


# --- onnxruntime-gpu's providers --------------------------------------------------------------------------------


def test_tensorrt_and_cuda_providers_listed_but_not_reported_fall_to_the_cpu(
    nvml: None, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ort_gpu = OnnxRuntimeGpuDouble()  # lists TensorRT, CUDA, CPU; every session reports the CPU only
    ort_gpu.install(monkeypatch)
    choice = _choose(model_dir, tmp_path / "engines")
    assert choice.backend.name == "onnxruntime-cpu"
    assert choice.reason.endswith(
        "onnxruntime-tensorrt: listed, but the session runs on CPUExecutionProvider; "
        "onnxruntime-cuda: listed, but the session runs on CPUExecutionProvider; onnxruntime-cpu"
    )
    trt_session, cuda_session, cpu_session = ort_gpu.sessions
    assert trt_session["providers"] == [TRT, CUDA, CPU]
    options = trt_session["options"][TRT]
    assert options["trt_engine_cache_path"] == str(tmp_path / "engines" / "ort-trt" / "nvidia-l4")
    assert Path(options["trt_engine_cache_path"]).is_dir()
    assert options["trt_timing_cache_path"] == options["trt_engine_cache_path"]
    assert (options["trt_engine_cache_enable"], options["trt_timing_cache_enable"], options["trt_fp16_enable"]) == (
        "True",
        "True",
        "True",
    )
    assert options["trt_profile_min_shapes"] == "input:1x3x32x32"
    assert options["trt_profile_max_shapes"] == "input:1x3x512x512"
    assert options["device_id"] == "0"  # the L4 is CUDA device 0 behind CUDA_VISIBLE_DEVICES=1
    assert cuda_session["providers"] == [CUDA, CPU] and cpu_session["providers"] == [CPU]


def test_cuda_listed_but_not_reported_takes_the_cpu_and_fp32_turns_fp16_off(
    nvml: None, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ort_gpu = OnnxRuntimeGpuDouble(listed=(CUDA, CPU))
    ort_gpu.install(monkeypatch)
    choice = _choose(model_dir, tmp_path)
    assert choice.reason.endswith(
        "onnxruntime-tensorrt: provider not in this onnxruntime build; "
        "onnxruntime-cuda: listed, but the session runs on CPUExecutionProvider; onnxruntime-cpu"
    )
    ort_gpu = OnnxRuntimeGpuDouble()
    ort_gpu.install(monkeypatch)
    manifest = load_catalog(bundled_catalog_dir()).get(MODEL)
    fp32 = EngineRequest(MODEL, manifest, "a" * 64, EngineSettings(precision="fp32", cache_dir=str(tmp_path)))
    _choose(model_dir, tmp_path, request=fp32)
    assert ort_gpu.sessions[0]["options"][TRT]["trt_fp16_enable"] == "False"


def test_a_provider_that_raises_gives_its_error_as_the_reason(
    nvml: None, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = "libnvinfer.so.10: cannot open shared object file: No such file or directory"
    ort_gpu = OnnxRuntimeGpuDouble(working=(CUDA, CPU), failing={TRT: missing})
    ort_gpu.install(monkeypatch)
    choice = _choose(model_dir, tmp_path)
    assert choice.backend.name == "onnxruntime-cuda"  # as the double reports it: nothing ran on a GPU
    assert f"onnxruntime-tensorrt: onnxruntime cannot load {_onnx(model_dir).name}: {missing}" in choice.reason
    assert choice.reason.endswith("; onnxruntime-cuda")


def test_a_session_that_reports_the_tensorrt_provider_is_taken(
    nvml: None, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    OnnxRuntimeGpuDouble(working=(TRT, CUDA, CPU)).install(monkeypatch)
    choice = _choose(model_dir, tmp_path)
    assert choice.backend.name == "onnxruntime-tensorrt"
    assert choice.reason.startswith("tensorrt: ") and choice.reason.endswith("; onnxruntime-tensorrt")


# --- the worker, the metric, doctor ----------------------------------------------------------------------------


def _node(model_dir: Path, cache_dir: Path) -> str:
    return (
        f'[worker]\nmodel_dir = "{model_dir}"\n[[models]]\nmodel = "{MODEL}"\ncapability = "upscale"\ncapacity = 2\n'
        f'[engines]\ncache_dir = "{cache_dir}"\n'
    )


def test_the_worker_serves_through_the_engine_and_exports_the_choice(
    nvml: None, gpu_runtime: TensorRTDouble, model_dir: Path, tmp_path: Path, built: dict[str, Path]
) -> None:
    cache_dir = _cache_with(tmp_path, built, "l4")
    _register(gpu_runtime, built["l4"], model_dir)
    node = load_node_text(_node(model_dir, cache_dir), source="node.toml")
    runtime = Runtime(node, load_catalog(bundled_catalog_dir()))
    with TestClient(create_app(runtime, token=None, load_in_background=False)) as client:
        body, content_type = golivepeer_multipart({"prompt": "x"}, "image", png_bytes(64, 48))
        answer = client.post(f"/m/upscale/{MODEL}/upscale", content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 200, answer.text
        assert answer.json()["images"][0]["url"].startswith("data:image/png;base64,")
        assert f'lpa_model_backend{{backend="tensorrt-rtx",model="upscale/{MODEL}"}} 1.0' in client.get("/metrics").text
        (listed,) = client.get("/models").json()
        assert (listed["backend"], listed["backend_reason"]) == ("tensorrt-rtx", "tensorrt-rtx")
    assert len(gpu_runtime.contexts) == 2  # capacity 2: two slots


def test_the_worker_without_a_gpu_records_the_reasons(no_nvml: None, model_dir: Path, tmp_path: Path) -> None:
    node = load_node_text(_node(model_dir, tmp_path), source="node.toml")
    runtime = Runtime(node, load_catalog(bundled_catalog_dir()))
    with TestClient(create_app(runtime, token=None, load_in_background=False)) as client:
        (listed,) = client.get("/models").json()
        assert listed["backend"] == "onnxruntime-cpu"
        assert listed["backend_reason"].startswith(f"tensorrt: {NO_GPU}; onnxruntime-tensorrt: ")


def test_doctor_says_which_rung_each_model_would_take_and_builds_nothing(
    nvml: None,
    model_dir: Path,
    tmp_path: Path,
    built: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache_dir = _cache_with(tmp_path, built, "l4")
    before = sorted(p.name for p in cache_dir.iterdir())

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("doctor loaded or built something")

    monkeypatch.setattr("appliance.backends.tensorrt.TensorRTBackend", never)
    monkeypatch.setattr(EngineCache, "build", never)
    node = load_node_text(_node(model_dir, cache_dir), source="node.toml")
    assert doctor_command(node, load_catalog(bundled_catalog_dir())) == 0
    out = capsys.readouterr().out
    assert "this worker NVIDIA L4 (GPU 1, CUDA device 0)" in out
    assert "  backend     tensorrt-rtx                 tensorrt-rtx (a valid engine is cached)" in out
    assert sorted(p.name for p in cache_dir.iterdir()) == before

    (cache_dir / built["l4"].name).unlink()
    assert doctor_command(node, load_catalog(bundled_catalog_dir())) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  backend"))
    assert "tensorrt: no engine for NVIDIA L4 sm_89 in the cache" in line
    assert line.split()[1] == "onnxruntime-cpu" and line.endswith("onnxruntime-cpu")


def test_prediction_uses_the_providers_doctor_saw_working(nvml: None, model_dir: Path, tmp_path: Path) -> None:
    host = HostFacts(
        allow_gpu=True,
        gpu=host_facts(allow_gpu=True).gpu,
        no_gpu=None,
        cuda_index=0,
        providers=(TRT, CUDA, CPU),
        flavour=None,
        cuda_wrapper=True,
    )
    verdicts = {TRT: "listed, but fell back to CPUExecutionProvider", CUDA: "works", CPU: "works"}
    prediction = predict_backend(
        _onnx(model_dir), host=host, engine=_request(model_dir, tmp_path), provider_verdicts=verdicts
    )
    assert prediction.backend == "onnxruntime-cuda"
    assert prediction.reason == (
        "tensorrt: TensorRT is not installed (neither tensorrt nor tensorrt_rtx); "
        "onnxruntime-tensorrt: listed, but fell back to CPUExecutionProvider; onnxruntime-cuda"
    )


def test_a_tiny_image_is_padded_up_to_the_engines_minimum(
    nvml: None, gpu_runtime: TensorRTDouble, model_dir: Path, tmp_path: Path, built: dict[str, Path]
) -> None:
    """10×10 + the net's border is under the engine's 32×32 minimum: the tile is padded, and matches onnxruntime."""
    cache_dir = _cache_with(tmp_path, built, "l4")
    _register(gpu_runtime, built["l4"], model_dir)
    choice = _choose(model_dir, cache_dir)
    manifest = load_catalog(bundled_catalog_dir()).get(MODEL)
    image = Image.open(io.BytesIO(png_bytes(10, 10))).convert("RGB")
    ours = np.asarray(create_pipeline(manifest, choice.backend).process(image, NoOptions()), dtype=np.int16)
    cpu = create_backend(_onnx(model_dir), intra_op_threads=1, allow_gpu=False).backend
    theirs = np.asarray(create_pipeline(manifest, cpu).process(image, NoOptions()), dtype=np.int16)
    assert ours.shape == (20, 20, 3) and np.abs(ours - theirs).max() <= 1
