"""The TensorRT backend: shapes checked against the engine's profile, one context, stream and set of buffers per
slot, CUDA graphs only for static shapes.

Only against doubles: TensorRT cannot load an engine without a GPU, and CI has none. ``tests/doubles/tensorrt.py``
stands in for TensorRT's runtime API (running the engine's ONNX model on onnxruntime's CPU provider, so outputs
are the real model's) and ``tests/doubles/cuda.py`` for polygraphy's CUDA wrapper. The engine bytes here are
labels the double recognises, not engine files: these tests are about the backend, not about deserialising
(tests/test_ladder.py feeds real TensorRT-RTX engines through the cache, and the real TensorRT-RTX too).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance.backends import BackendError, BackendInputError
from appliance.backends.onnxruntime import OnnxRuntimeBackend
from appliance.backends.tensorrt import TensorRTBackend
from appliance.catalog import Manifest, load_catalog
from appliance.modelstore import ModelStore
from appliance.pipelines import NoOptions, create_pipeline
from appliance.resources import bundled_catalog_dir
from tests.doubles.cuda import FakeGpu, polygraphy_cuda_module
from tests.doubles.tensorrt import EngineSpec, TensorRTDouble
from tests.helpers import GRACE_HOPPER

pytestmark = pytest.mark.models


def _manifest(name: str) -> Manifest:
    return load_catalog(bundled_catalog_dir()).get(name)


# Output shapes as TensorRT infers them from each network (checked by the double against what the model produces):
# upconv7 is 2× with 7 pixels of border eaten on each side; u2netp's seven side outputs are all 1×1×320×320.
OUTPUT_SHAPES = {
    "waifu2x-upconv7": lambda s: {"conv7": (1, 3, 2 * s["input"][2] - 28, 2 * s["input"][3] - 28)},
    "u2netp": lambda s: dict.fromkeys(["1959", "1960", "1961", "1962", "1963", "1964", "1965"], (1, 1, 320, 320)),
}


def _spec(model_dir: Path, name: str) -> EngineSpec:
    """The engine the build plan makes for ``name``: its ONNX file and the manifest's profile."""
    manifest = _manifest(name)
    profiles = {
        t.name: (tuple(t.min_shape or ()), tuple(t.opt_shape or ()), tuple(t.max_shape or ())) for t in manifest.inputs
    }
    return EngineSpec(ModelStore(model_dir).verified_path(manifest), profiles, OUTPUT_SHAPES.get(name))


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "polygraphy.cuda", polygraphy_cuda_module(gpu))
    return gpu


def _tensorrt(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, flavour: str) -> TensorRTDouble:
    double = TensorRTDouble(gpu, flavour)
    monkeypatch.setitem(sys.modules, double.module_name, double.module())
    return double


def _backend(
    monkeypatch: pytest.MonkeyPatch,
    gpu: FakeGpu,
    model_dir: Path,
    name: str,
    *,
    flavour: str = "tensorrt-rtx",
    capacity: int = 1,
) -> tuple[TensorRTBackend, TensorRTDouble]:
    double = _tensorrt(monkeypatch, gpu, flavour)
    label = f"engine of {name}".encode()
    double.register(label, _spec(model_dir, name))
    return TensorRTBackend(label, flavour=flavour, capacity=capacity, label=name), double


def _tile(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, height, width), dtype=np.float32)


def test_outputs_match_onnxruntime_for_every_shape_in_the_profile(
    monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, model_dir: Path
) -> None:
    backend, _ = _backend(monkeypatch, gpu, model_dir, "waifu2x-upconv7")
    reference = OnnxRuntimeBackend(
        _spec(model_dir, "waifu2x-upconv7").onnx, providers=["CPUExecutionProvider"], intra_op_threads=1
    )
    allocated = gpu.mallocs
    for height, width in [(64, 64), (32, 48), (512, 40), (40, 512), (64, 64)]:  # grows, shrinks, each max, back
        tile = _tile(height, width)
        (ours,) = backend.run({"input": tile})
        (theirs,) = reference.run({"input": tile})
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert gpu.mallocs == allocated  # buffers were allocated once, at the profile's max shape, and reused


def test_a_shape_outside_the_profile_is_refused_with_what_the_engine_accepts(
    monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, model_dir: Path
) -> None:
    backend, double = _backend(monkeypatch, gpu, model_dir, "waifu2x-upconv7")
    expected = "outside what this model's TensorRT engine accepts: 1×3×32×32 to 1×3×512×512"
    for bad in [_tile(16, 16), _tile(64, 600), np.zeros((3, 64, 64), np.float32)]:
        with pytest.raises(BackendInputError, match=expected) as refused:
            backend.run({"input": bad})
        assert "×".join(map(str, bad.shape)) in str(refused.value)
    assert double.contexts[0].executions == []  # refused before a slot was taken: nothing ran
    assert backend.run({"input": _tile(32, 32)})[0].shape[0] == 1  # and the backend still serves
    with pytest.raises(BackendError, match="missing \\['input'\\]"):
        backend.run({"x": _tile(32, 32)})


def test_slots_never_share_contexts_streams_or_buffers(
    monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, model_dir: Path
) -> None:
    capacity = 3
    backend, double = _backend(monkeypatch, gpu, model_dir, "waifu2x-upconv7", capacity=capacity)
    slots = backend._slots
    assert len(slots) == capacity == len(double.contexts)
    assert len({id(s.context) for s in slots}) == capacity
    assert len({s.stream.ptr for s in slots}) == capacity
    pointers = [b.ptr for s in slots for b in s.buffers.values()]
    assert len(set(pointers)) == len(pointers) == capacity * 2  # one input and one output per slot
    allocated = gpu.mallocs

    barrier = threading.Barrier(capacity, timeout=10)
    double.before_execute = barrier.wait  # every slot is inside execute_async_v3 at the same moment
    results: dict[int, np.ndarray] = {}

    def infer(seed: int) -> None:
        results[seed] = backend.run({"input": _tile(40 + seed, 40, seed)})[0]

    threads = [threading.Thread(target=infer, args=(seed,)) for seed in range(capacity)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    double.before_execute = None

    for slot in slots:  # each context ran on its own stream with its own slot's buffers, once
        (execution,) = slot.context.executions
        assert execution.stream == slot.stream.ptr
        assert set(execution.addresses.values()) == {b.ptr for b in slot.buffers.values()}
    for kind, stream, ptr in gpu.ops:  # and every copy used the stream of the slot owning the buffer
        if kind != "execute":
            (owner,) = [s for s in slots if ptr in {b.ptr for b in s.buffers.values()}]
            assert stream == owner.stream.ptr
    reference = OnnxRuntimeBackend(
        _spec(model_dir, "waifu2x-upconv7").onnx, providers=["CPUExecutionProvider"], intra_op_threads=1
    )
    for seed, result in results.items():  # no request saw another's data
        np.testing.assert_allclose(
            result, reference.run({"input": _tile(40 + seed, 40, seed)})[0], rtol=1e-5, atol=1e-5
        )
    assert gpu.mallocs == allocated


def test_tensorrt_10_captures_a_cuda_graph_per_slot_for_a_static_engine(
    monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, model_dir: Path
) -> None:
    backend, _ = _backend(monkeypatch, gpu, model_dir, "u2netp", flavour="tensorrt", capacity=2)
    assert backend.static_shapes and backend.graphs == "captured per slot after one enqueue"
    image = _tile(320, 320)
    reference = OnnxRuntimeBackend(
        _spec(model_dir, "u2netp").onnx, providers=["CPUExecutionProvider"], intra_op_threads=1
    )
    expected = reference.run({"input.1": image})[0]
    for _ in range(3):
        np.testing.assert_allclose(backend.run({"input.1": image})[0], expected, rtol=1e-4, atol=1e-5)
    # One caller at a time: the same (hottest) slot each time. Run 1 enqueued directly (TensorRT wants one enqueue
    # before capture), run 2 was captured and launched, run 3 launched the graph: two launches on that slot's
    # stream, two enqueues seen by TensorRT; the other slot has not run yet.
    (used,) = [s for s in backend._slots if s.graph_state == "ready"]
    (idle,) = [s for s in backend._slots if s is not used]
    assert gpu.launches == [used.stream.ptr] * 2
    assert len(used.context.executions) == 2
    assert idle.graph_state == "warm-up" and idle.graph is None and idle.context.executions == []
    backend.close()
    assert gpu.executables == {} and gpu.memory == {} and gpu.streams == set()


def test_no_cuda_graphs_for_dynamic_shapes(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, model_dir: Path) -> None:
    backend, _ = _backend(monkeypatch, gpu, model_dir, "waifu2x-upconv7", flavour="tensorrt")
    assert backend.graphs == "off: the engine's input shapes are dynamic"
    for _ in range(3):
        backend.run({"input": _tile(64, 64)})
    assert gpu.launches == [] and gpu.graphs == {} and backend._slots[0].graph_state == "off"


def test_a_failed_capture_leaves_the_slot_running_without_a_graph(
    monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, model_dir: Path
) -> None:
    backend, _ = _backend(monkeypatch, gpu, model_dir, "u2netp", flavour="tensorrt")
    cudart = sys.modules["polygraphy.cuda"].wrapper().handle
    monkeypatch.setattr(cudart, "cudaStreamBeginCapture", lambda stream, mode: 900, raising=False)
    image = _tile(320, 320)
    first = backend.run({"input.1": image})[0]
    for _ in range(2):  # the second run tries to capture, fails, and runs the engine directly
        np.testing.assert_array_equal(backend.run({"input.1": image})[0], first)
    assert backend._slots[0].graph_state == "off" and gpu.launches == []


@pytest.mark.parametrize(("name", "strategy"), [("u2netp", "WHOLE_GRAPH_CAPTURE"), ("waifu2x-upconv7", "DISABLED")])
def test_tensorrt_rtx_captures_graphs_itself_for_static_engines_only(
    monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, model_dir: Path, name: str, strategy: str
) -> None:
    _, double = _backend(monkeypatch, gpu, model_dir, name, flavour="tensorrt-rtx", capacity=2)
    assert [c.runtime_config.cuda_graph_strategy.name for c in double.contexts] == [strategy] * 2
    assert gpu.launches == []  # no graphs of our own: TensorRT-RTX replays its own


def test_upscale_pipeline_through_the_engine_matches_onnxruntime(
    monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, model_dir: Path
) -> None:
    backend, _ = _backend(monkeypatch, gpu, model_dir, "waifu2x-upconv7")
    manifest = _manifest("waifu2x-upconv7")
    image = Image.open(GRACE_HOPPER).convert("RGB").resize((120, 90))
    ours = np.asarray(create_pipeline(manifest, backend).process(image, NoOptions()), dtype=np.int16)
    cpu = OnnxRuntimeBackend(
        _spec(model_dir, "waifu2x-upconv7").onnx, providers=["CPUExecutionProvider"], intra_op_threads=1
    )
    theirs = np.asarray(create_pipeline(manifest, cpu).process(image, NoOptions()), dtype=np.int16)
    assert ours.shape == theirs.shape == (180, 240, 3)
    assert np.abs(ours - theirs).max() <= 1  # the same model on both sides; rounding may differ by one level


def test_bytes_tensorrt_cannot_deserialize_are_a_backend_error(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu) -> None:
    _tensorrt(monkeypatch, gpu, "tensorrt-rtx")
    with pytest.raises(BackendError, match=r"could not deserialize x\.engine: .*magicTag"):
        TensorRTBackend(b"not an engine", flavour="tensorrt-rtx", capacity=1, label="x.engine")
    assert gpu.memory == {} and gpu.streams == set()


def test_a_cpu_install_never_imports_tensorrt_or_cuda() -> None:
    code = (
        "import sys, appliance.runtime, appliance.backends.tensorrt, appliance.doctor;"
        "names = ('tensorrt', 'tensorrt_rtx', 'polygraphy', 'polygraphy.cuda', 'cuda');"
        "loaded = [m for m in names if m in sys.modules]; print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
