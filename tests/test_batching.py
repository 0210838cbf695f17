"""Dynamic batching (appliance/batching.py): stacking, splitting, errors, timeouts, config, the real models."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from appliance.backends import BackendError, BackendInputError, create_backend
from appliance.batching import Batcher, caller, unbatchable_backend
from appliance.catalog import load_catalog
from appliance.config import load_node_text
from appliance.imaging import decode_image
from appliance.modelstore import ModelStore
from appliance.pipelines import create_pipeline
from appliance.resources import bundled_catalog_dir
from appliance.runtime import Runtime
from appliance.strict import ConfigError
from tests.conftest import REAL_MODELS, AppFactory
from tests.helpers import golivepeer_multipart, png_bytes, write_node

# --- the mechanism, on a backend double ---------------------------------------------------------------------


class RecordingBackend:
    """A backend double: ``y = 2x + 1`` per row (so each row's answer is its own), every call recorded."""

    name = "double"
    input_names = ("x",)
    output_names = ("y", "z")

    def __init__(self, *, fail: Exception | None = None, drop_batch: bool = False, delay: float = 0.0) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.fail, self.drop_batch, self.delay = fail, drop_batch, delay
        self.lock = threading.Lock()
        self.running = self.most_at_once = 0

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        x = feeds["x"]
        with self.lock:
            self.calls.append(tuple(x.shape))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        if self.fail is not None:
            raise self.fail
        if self.drop_batch:
            return [x.reshape(1, -1)]  # one row, whatever came in
        return [2 * x + 1, x.sum(axis=(1, 2), keepdims=True)]


def _run_together(
    batcher: Batcher, inputs: list[np.ndarray], *, announce: bool = True
) -> tuple[list[list[np.ndarray] | BaseException], float]:
    """Each input on its own thread, all released at once; with ``announce`` each thread is a caller first.

    Returns each thread's answer (or exception) and the seconds until the last one came back.
    """
    results: list[list[np.ndarray] | BaseException] = [ValueError("not run")] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def one(i: int) -> None:
        context = caller(batcher if announce else None)
        with context:
            barrier.wait()
            try:
                results[i] = batcher.run({"x": inputs[i]})
            except BaseException as exc:  # the test inspects it
                results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(inputs))]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results, time.monotonic() - started


def _rows(n: int, shape: tuple[int, ...] = (2, 3)) -> list[np.ndarray]:
    return [np.full((1, *shape), float(i), dtype=np.float32) for i in range(n)]


def test_concurrent_requests_share_one_call_and_each_gets_its_own_rows() -> None:
    backend, sizes = RecordingBackend(), []
    batcher = Batcher(backend, max_size=4, max_wait_s=10.0, on_batch=sizes.append)
    inputs = _rows(4)
    results, elapsed = _run_together(batcher, inputs)
    assert backend.calls == [(4, 2, 3)] and sizes == [4]
    for x, result in zip(inputs, results, strict=True):
        assert isinstance(result, list)
        np.testing.assert_array_equal(result[0], 2 * x + 1)
        np.testing.assert_array_equal(result[1], x.sum(axis=(1, 2), keepdims=True))
    assert elapsed < 5, "a full batch must not wait for max_wait"


def test_a_batch_closes_once_every_caller_is_in_it() -> None:
    """Three callers, max_size 8, a 10 s wait: the batch runs as soon as the third arrives, not after 10 s."""
    backend = RecordingBackend()
    results, elapsed = _run_together(Batcher(backend, max_size=8, max_wait_s=10.0), _rows(3))
    assert backend.calls == [(3, 2, 3)]
    assert all(isinstance(r, list) for r in results)
    assert elapsed < 5


def test_a_lone_request_does_not_wait() -> None:
    backend = RecordingBackend()
    batcher = Batcher(backend, max_size=4, max_wait_s=10.0)
    started = time.monotonic()
    with caller(batcher):
        (y, _) = batcher.run({"x": _rows(1)[0]})
    assert time.monotonic() - started < 2 and backend.calls == [(1, 2, 3)]
    np.testing.assert_array_equal(y, np.ones((1, 2, 3), dtype=np.float32))


def test_the_timeout_flushes_a_partial_batch() -> None:
    """Calls from outside any caller span (nobody says who else may come): two of four wait max_wait, then run."""
    backend, sizes = RecordingBackend(), []
    batcher = Batcher(backend, max_size=4, max_wait_s=0.3, on_batch=sizes.append)
    results, elapsed = _run_together(batcher, _rows(2), announce=False)
    assert backend.calls == [(2, 2, 3)] and sizes == [2]
    assert all(isinstance(r, list) for r in results)
    assert 0.25 <= elapsed < 5


def test_more_than_max_size_runs_in_several_batches() -> None:
    backend = RecordingBackend()
    results, _ = _run_together(Batcher(backend, max_size=4, max_wait_s=0.5), _rows(6))
    assert sorted(shape[0] for shape in backend.calls) == [2, 4]
    for i, result in enumerate(results):
        assert isinstance(result, list)
        np.testing.assert_array_equal(result[0], np.full((1, 2, 3), 2.0 * i + 1))


def test_requests_of_different_shapes_run_in_separate_batches() -> None:
    backend = RecordingBackend()
    inputs = [*_rows(2, (2, 3)), *_rows(2, (5, 5))]
    results, _ = _run_together(Batcher(backend, max_size=4, max_wait_s=10.0), inputs)
    assert sorted(backend.calls) == [(2, 2, 3), (2, 5, 5)]
    for x, result in zip(inputs, results, strict=True):
        assert isinstance(result, list)
        np.testing.assert_array_equal(result[0], 2 * x + 1)


def test_while_a_batch_runs_the_next_one_fills_past_max_wait() -> None:
    """One graph call at a time: requests arriving while the model is busy all go together once it is free."""
    backend, sizes = RecordingBackend(delay=0.4), []
    batcher = Batcher(backend, max_size=4, max_wait_s=0.001, on_batch=sizes.append)
    first = threading.Thread(target=batcher.run, args=({"x": _rows(1)[0]},))
    first.start()
    time.sleep(0.1)  # the first request is in its graph call
    results, _ = _run_together(batcher, _rows(3), announce=False)
    first.join(10)
    assert sizes == [1, 3] and backend.most_at_once == 1
    assert all(isinstance(r, list) for r in results)


@pytest.mark.parametrize("max_running", [1, 2])
def test_graph_calls_at_once_are_bounded_by_max_running(max_running: int) -> None:
    backend = RecordingBackend(delay=0.2)
    inputs = [*_rows(2, (2, 3)), *_rows(2, (5, 5)), *_rows(2, (7, 7))]  # three batches of two
    results, _ = _run_together(Batcher(backend, max_size=2, max_wait_s=10.0, max_running=max_running), inputs)
    assert sorted(backend.calls) == [(2, 2, 3), (2, 5, 5), (2, 7, 7)]
    assert backend.most_at_once == max_running
    assert all(isinstance(r, list) for r in results)


@pytest.mark.parametrize("error", [BackendError("inference failed: boom"), BackendInputError("too big: 9x9")])
def test_a_failed_batch_answers_each_request_with_the_error_and_the_next_batch_runs(error: Exception) -> None:
    backend = RecordingBackend(fail=error)
    batcher = Batcher(backend, max_size=3, max_wait_s=10.0)
    results, _ = _run_together(batcher, _rows(3))
    assert backend.calls == [(3, 2, 3)]
    assert len({id(r) for r in results}) == 3, "each request raises its own exception object"
    for result in results:
        assert type(result) is type(error) and str(result) == str(error)
    backend.fail = None
    results, _ = _run_together(batcher, _rows(3))
    assert all(isinstance(r, list) for r in results)


def test_a_model_that_drops_the_batch_dimension_is_an_error_for_every_request() -> None:
    results, _ = _run_together(Batcher(RecordingBackend(drop_batch=True), max_size=2, max_wait_s=10.0), _rows(2))
    for result in results:
        assert isinstance(result, BackendError) and "does not keep the batch dimension" in str(result)


def test_tensorrt_backends_do_not_batch() -> None:
    assert unbatchable_backend("tensorrt") and unbatchable_backend("onnxruntime-tensorrt")
    assert unbatchable_backend("onnxruntime-cpu") is None and unbatchable_backend("onnxruntime-cuda") is None


# --- the node file --------------------------------------------------------------------------------------------

ENTRY = '[[models]]\nmodel = "{model}"\ncapability = "{capability}"\ncapacity = 4\n'


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        ("batch = { max_size = 1 }", "Expected `int` >= 2 - at `$.models[0].batch.max_size`"),
        ("batch = { max_size = 65 }", "Expected `int` <= 64 - at `$.models[0].batch.max_size`"),
        ("batch = { max_wait_ms = 5 }", "Object missing required field `max_size` - at `$.models[0].batch`"),
        ("batch = { max_size = 2, max_wait_ms = 0 }", "Expected `float` >= 0.1 - at `$.models[0].batch.max_wait_ms`"),
        ("batch = { max_size = 2, size = 2 }", "Object contains unknown field `size` - at `$.models[0].batch`"),
        ("batch = 4", "Expected `object | null`, got `int` - at `$.models[0].batch`"),
        (
            "batch = { max_size = 8 }",
            "model 'waifu2x-upconv7': batch.max_size 8 exceeds capacity 4; a batch is made of requests holding a "
            "slot at once, so raise capacity or lower max_size - at `$.models[0]`",
        ),
    ],
)
def test_batch_settings_errors_name_the_path(batch: str, expected: str) -> None:
    text = ENTRY.format(model="waifu2x-upconv7", capability="upscale") + batch + "\n"
    with pytest.raises(ConfigError) as caught:
        load_node_text(text, source="node.toml")
    assert str(caught.value) == f"node.toml: {expected}"


def test_batch_settings_decode() -> None:
    text = ENTRY.format(model="waifu2x-upconv7", capability="upscale") + "batch = { max_size = 4, max_wait_ms = 2.5 }\n"
    batch = load_node_text(text, source="n").models[0].batch
    assert batch is not None and (batch.max_size, batch.max_wait_ms) == (4, 2.5)
    default_wait = load_node_text(text.replace(", max_wait_ms = 2.5", ""), source="n").models[0].batch
    assert default_wait is not None and default_wait.max_wait_ms == 5.0
    assert load_node_text(ENTRY.format(model="u2netp", capability="segmentation"), source="n").models[0].batch is None


def test_a_model_with_a_fixed_batch_of_one_cannot_batch() -> None:
    node = load_node_text(
        ENTRY.format(model="u2netp", capability="segmentation") + 'model_id = "cutout"\nbatch = { max_size = 2 }\n',
        source="n",
    )
    with pytest.raises(ValueError, match=r"model 'cutout' \(u2netp\) cannot batch: its input 'input.1' has a fixed"):
        Runtime(node, load_catalog(bundled_catalog_dir()))


def test_lpa_serve_refuses_it_with_exit_2(tmp_path: Path) -> None:
    node = tmp_path / "node.toml"
    node.write_text(ENTRY.format(model="u2netp", capability="segmentation") + "batch = { max_size = 4 }\n")
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "serve", "--node", str(node), "--cpu-only"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "lpa: error: model 'u2netp' (u2netp) cannot batch" in result.stderr and "remove `batch`" in result.stderr


# --- the real models ------------------------------------------------------------------------------------------


@pytest.mark.models
def test_manifests_declare_a_dynamic_batch_exactly_where_the_onnx_file_has_one(model_dir: Path) -> None:
    catalog, store = load_catalog(bundled_catalog_dir()), ModelStore(model_dir)
    declared = {}
    for name in REAL_MODELS:
        manifest = catalog.get(name)
        session = ort.InferenceSession(str(store.verified_path(manifest)), providers=["CPUExecutionProvider"])
        shapes = {i.name: i.shape for i in session.get_inputs()}
        for tensor in manifest.inputs:
            free = not isinstance(shapes[tensor.name][0], int)
            assert tensor.dynamic_batch == free, (
                f"{name} input {tensor.name}: the file's shape is {shapes[tensor.name]}"
            )
            declared[name] = tensor.dynamic_batch
    assert declared == {"waifu2x-upconv7": True, "waifu2x-cunet": True, "u2netp": False, "ppocr-v4-det": True}


def _pipelines(model_dir: Path, name: str, max_size: int) -> tuple[Any, Any, list[int]]:
    """The model's pipeline twice on one onnxruntime session: plain, and through a Batcher (a long max_wait, so
    only 'everyone is here' or a full batch closes one). Returns (plain, batched, batch sizes seen)."""
    manifest = load_catalog(bundled_catalog_dir()).get(name)
    backend = create_backend(ModelStore(model_dir).verified_path(manifest), intra_op_threads=0, allow_gpu=False).backend
    sizes: list[int] = []
    batcher = Batcher(backend, max_size=max_size, max_wait_s=20.0, on_batch=sizes.append)
    return create_pipeline(manifest, backend), create_pipeline(manifest, batcher), sizes


def _process_together(pipeline: Any, images: list[Image.Image]) -> list[Image.Image]:
    """Each image on its own thread, every thread a caller of the pipeline's batcher before any of them runs."""
    batcher = pipeline.backend
    out: list[Image.Image | None] = [None] * len(images)
    barrier = threading.Barrier(len(images))

    def one(i: int) -> None:
        with caller(batcher):
            barrier.wait()
            out[i] = pipeline.process(images[i], pipeline.options_type())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(o is not None for o in out)
    return [o for o in out if o is not None]


@pytest.mark.models
@pytest.mark.parametrize(
    ("name", "sizes", "expected_batches"),
    [
        # one 78² tile each (64 + 2 × 7 border): one batch of four, whatever the pictures
        ("waifu2x-upconv7", [(64, 64)] * 4, [4]),
        # two tile shapes: two batches of two, side by side
        ("waifu2x-upconv7", [(64, 64), (40, 56), (64, 64), (40, 56)], [2, 2]),
        # the longer side resized to 512: the same network input for a square and for another square
        ("ppocr-v4-det", [(300, 300), (200, 200), (300, 300)], [3]),
    ],
)
def test_batched_answers_equal_unbatched_answers(
    model_dir: Path, name: str, sizes: list[tuple[int, int]], expected_batches: list[int]
) -> None:
    plain, batched, seen = _pipelines(model_dir, name, max_size=4)
    images = [decode_image(png_bytes(w, h, seed=i), max_pixels=1 << 24) for i, (w, h) in enumerate(sizes)]
    alone = [plain.process(image, plain.options_type()) for image in images]
    together = _process_together(batched, images)
    assert sorted(seen) == expected_batches
    for i, (want, got) in enumerate(zip(alone, together, strict=True)):
        assert got.mode == want.mode and got.size == want.size
        assert np.array_equal(np.asarray(got), np.asarray(want)), f"image {i} differs from its unbatched answer"


UPSCALE = "/m/upscale/waifu2x-upconv7"


def _upscale(client: Any, image: bytes) -> Any:
    body, content_type = golivepeer_multipart({"prompt": "x", "seed": "7"}, "image", image)
    return client.post(f"{UPSCALE}/upscale", content=body, headers={"Content-Type": content_type})


def _concurrently(call: Callable[[int], Any], n: int) -> list[Any]:
    results: list[Any] = [None] * n
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, call(i))) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


@pytest.mark.models
def test_the_worker_answers_batched_requests_as_unbatched_and_counts_the_batches(make_client: AppFactory) -> None:
    entry = {"model": "waifu2x-upconv7", "capability": "upscale", "capacity": 4, "queue": 4}
    plain = make_client([entry])
    batched = make_client([{**entry, "batch": {"max_size": 4, "max_wait_ms": 50}}])
    images = [png_bytes(48, 40, seed=i) for i in range(6)]
    want = [_upscale(plain, image) for image in images]
    got = _concurrently(lambda i: _upscale(batched, images[i]), len(images))
    for w, g in zip(want, got, strict=True):
        assert w.status_code == g.status_code == 200
        assert w.json() == g.json()
    metrics = batched.get("/metrics").text
    count = re.search(r'^lpa_batch_size_count\{model="upscale/waifu2x-upconv7"\} (\S+)$', metrics, re.M)
    total = re.search(r'^lpa_batch_size_sum\{model="upscale/waifu2x-upconv7"\} (\S+)$', metrics, re.M)
    assert count and total, metrics
    assert float(total.group(1)) == len(images) + 1  # one tile each, and the warm-up's
    assert 3 <= float(count.group(1)) <= len(images) + 1  # the warm-up, then at least two: max_size 4 < 6 requests
    assert "lpa_batch_size_count{" not in plain.get("/metrics").text, "only batching models have the series"


@pytest.mark.models
def test_capacity_and_the_busy_answer_are_unchanged(make_client: AppFactory) -> None:
    """capacity 2, queue 0, batches of 2: a third request while two run is refused at once, as without batching."""
    client = make_client(
        [{"model": "waifu2x-upconv7", "capability": "upscale", "capacity": 2, "queue": 0, "batch": {"max_size": 2}}]
    )
    slow = png_bytes(256, 256)  # one full 270² tile each: a batch of two takes a while on a CPU
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(_upscale(client, slow))) for _ in range(2)]
    for thread in threads:
        thread.start()
    refused = None
    for _ in range(1000):
        if client.get("/models").json()[0]["in_flight"] == 2:
            refused = _upscale(client, png_bytes(16, 16))
            break
        time.sleep(0.005)
    for thread in threads:
        thread.join(120)
    assert refused is not None, "the two requests were never in flight together"
    assert refused.status_code == 500 and "insufficient capacity" in refused.json()["detail"]["msg"]
    assert [r.status_code for r in results] == [200, 200] and results[0].json() == results[1].json()
    assert _upscale(client, png_bytes(16, 16)).status_code == 200  # both slots were released


def test_write_node_writes_inline_tables(tmp_path: Path) -> None:
    path = write_node(tmp_path / "n.toml", model_dir=tmp_path, models=[{"model": "m", "batch": {"max_size": 2}}])
    assert "batch = { max_size = 2 }" in path.read_text()
