"""The one prepared check for a machine with a GPU (an operator's node, or a GPU machine lent for a few minutes).

Run it as ``bench/gpu_check.sh`` (under 8 minutes; ``--budget`` seconds, default 450). Every part says what it
did, or ``SKIP <part>: <why>`` when its runtime is missing here, so the same script runs on a full GPU node
(TensorRT + onnxruntime-gpu) and on a machine that has only CUDA, PyTorch and nvidia-ml-py:

1. ``gpus``     the NVML probe (``appliance.gpu``), cross-checked with PyTorch's view where PyTorch is installed;
2. ``engines``  TensorRT engines for this host's GPUs, built through the appliance's own cache and builder
                (``tensorrt`` 10, else ``tensorrt_rtx``) into ``--cache-dir`` (a fresh temporary folder by default);
3. ``ladder``   in process, the rung each model would take and why (``predict_backend``; loads nothing);
4. ``worker``   a real ``lpa serve`` on loopback, with that engine cache: its ``/hardware/info``,
                ``/hardware/stats`` and ``/models`` (each model's backend and the ladder's full reason chain);
5. ``accuracy`` each engine's output against onnxruntime on the CPU, on a real photo: relative L2 error
                ‖trt − cpu‖ / ‖cpu‖ ≤ 1e-2 for fp16 engines (1e-3 for fp32), plus the largest absolute difference;
6. ``latency``  median milliseconds per inference (inputs copied in and outputs copied out included): TensorRT
                engine vs onnxruntime CUDA vs onnxruntime CPU, at 256² and 512² (a model with a fixed input size,
                u2netp's 320², at that size only).

Exit status: 1 when an accuracy check fails or the worker does not start, else 0 (skipped parts are not failures).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # a bare python3 (no venv) still finds the appliance's own modules

MODELS = ("waifu2x-upconv7", "u2netp", "ppocr-v4-det")  # the real models: waifu2x, U²-Net, the dense-map model
SIZES = (256, 512)
PHOTO = REPO / "tests" / "data" / "grace_hopper.jpg"
TOLERANCE = {"fp16": 1e-2, "fp32": 1e-3}


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def say(text: str = "") -> None:
    print(text, flush=True)


def skip(part: str, why: str) -> None:
    say(f"SKIP {part}: {why}")


def missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def version_of(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


# --- 1. gpus -------------------------------------------------------------------------------------------------


def part_gpus() -> Any:
    say("== gpus (NVML through nvidia-ml-py)")
    if missing("pynvml"):
        skip("gpus", "nvidia-ml-py (pynvml) is not installed")
        return None
    from appliance.gpu import probe_gpus  # noqa: PLC0415

    probe = probe_gpus()
    if not probe.gpus:
        say(f"no GPU: {probe.problem}")
    else:
        say(f"driver {probe.driver_version}, CUDA driver API {probe.cuda_driver_version}")
        for g in probe.gpus:
            say(
                f"  gpu {g.index}: {g.name} sm_{g.major}{g.minor}, {g.memory_total // 2**20} MiB "
                f"({g.memory_free // 2**20} free), util {g.utilization_compute} %, {g.uuid}"
            )
    if missing("torch"):
        say("  (PyTorch not installed: no second opinion)")
    else:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                major, minor = torch.cuda.get_device_capability(i)
                say(f"  torch cuda:{i}: {torch.cuda.get_device_name(i)} sm_{major}{minor} (CUDA {torch.version.cuda})")
        else:
            say("  torch: CUDA not available")
    say(f"  CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}")
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-rtx-cu12", "onnxruntime", "onnxruntime-gpu"):
        if version_of(dist):
            say(f"  installed {dist} {version_of(dist)}")
    return probe


# --- models and node file ------------------------------------------------------------------------------------


def present_models(model_dir: Path) -> list[str]:
    """The real models whose files are here and verified (fetching needs the network, which may be absent)."""
    from appliance.catalog import load_catalog  # noqa: PLC0415
    from appliance.modelstore import ModelFileError, ModelStore  # noqa: PLC0415
    from appliance.resources import bundled_catalog_dir  # noqa: PLC0415

    catalog, store, found = load_catalog(bundled_catalog_dir()), ModelStore(model_dir), []
    for name in MODELS:
        try:
            store.verified_path(catalog.get(name))
            found.append(name)
        except ModelFileError as exc:
            say(f"  model {name}: not usable here ({exc})")
    return found


def node_text(model_dir: Path, cache_dir: Path, models: list[str], precision: str) -> str:
    from appliance.catalog import load_catalog  # noqa: PLC0415
    from appliance.resources import bundled_catalog_dir  # noqa: PLC0415

    catalog = load_catalog(bundled_catalog_dir())
    lines = ["[worker]", f'model_dir = "{model_dir}"', 'log_level = "warning"']
    for name in models:
        lines += ["[[models]]", f'model = "{name}"', f'capability = "{catalog.get(name).capability}"']
    lines += ["[engines]", f'precision = "{precision}"', f'cache_dir = "{cache_dir}"']
    return "\n".join(lines) + "\n"


# --- 2. worker -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # loopback, our own worker
        return json.loads(answer.read())


@contextlib.contextmanager
def worker(node: Path, budget: Budget) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "appliance.cli", "serve", "--node", str(node), "--listen", f"127.0.0.1:{port}"]
    log = tempfile.NamedTemporaryFile(prefix="gpu_check_worker_", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + min(240.0, max(10.0, budget.left() - 60))
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                status = get_json(f"{base}/health", timeout=2).get("status")
                if status in ("OK", "ERROR"):
                    break
            time.sleep(0.5)
        if status not in ("OK", "ERROR"):
            tail = Path(log.name).read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"the worker did not come up (status {status}); its log:\n" + "\n".join(tail))
        yield base
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        if process.poll() is None:
            process.kill()


def part_worker(node: Path, budget: Budget) -> bool:
    say("== worker (a real `lpa serve` on loopback)")
    gaps = missing("litestar", "uvicorn", "msgspec", "structlog", "onnxruntime", "prometheus_client")
    if gaps:
        skip("worker", f"the appliance's dependencies are missing ({', '.join(gaps)}); carry `./dev wheelhouse`")
        return True
    try:
        with worker(node, budget) as base:
            info = get_json(f"{base}/hardware/info")
            stats = get_json(f"{base}/hardware/stats")
            models = get_json(f"{base}/models")
    except (RuntimeError, OSError) as exc:
        say(f"FAIL worker: {exc}")
        return False
    say("GET /hardware/info  " + json.dumps(info, indent=None))
    say("GET /hardware/stats " + json.dumps(stats, indent=None))
    for entry in models:
        say(f"  {entry['model']:18} {entry['status']:5} backend {entry['backend']}: {entry['backend_reason']}")
        if entry.get("error"):
            say(f"  {'':18} error: {entry['error']}")
    return True


# --- 3. ladder -----------------------------------------------------------------------------------------------


def part_ladder(node: Any, model_dir: Path, probe: Any) -> None:
    say("== ladder (what each model would take in this process; nothing loaded)")
    if missing("onnxruntime", "structlog", "msgspec"):
        skip("ladder", f"needs {', '.join(missing('onnxruntime', 'structlog', 'msgspec'))}")
        return
    from appliance.backends import EngineRequest, host_facts, predict_backend  # noqa: PLC0415
    from appliance.catalog import load_catalog  # noqa: PLC0415
    from appliance.doctor import working_providers  # noqa: PLC0415
    from appliance.modelstore import ModelStore  # noqa: PLC0415
    from appliance.resources import bundled_catalog_dir  # noqa: PLC0415

    host = host_facts(allow_gpu=True, probe=probe)
    verdicts = working_providers()
    say(f"onnxruntime providers: {verdicts}")
    catalog, store = load_catalog(bundled_catalog_dir()), ModelStore(model_dir)
    for served in node.models:
        manifest = catalog.get(served.model)
        sha = store.expected_sha256(manifest)
        request = EngineRequest(served.model, manifest, sha, node.engines) if sha else None
        prediction = predict_backend(store.path_for(manifest), host=host, engine=request, provider_verdicts=verdicts)
        say(f"  {served.model:18} → {prediction.backend}: {prediction.reason}")


# --- 4. engines ----------------------------------------------------------------------------------------------


def part_engines(node: Any, model_dir: Path, probe: Any, budget: Budget) -> list[Any]:
    say("== engines (built through the appliance's engine cache)")
    from appliance.engines.builder import available_flavour  # noqa: PLC0415

    flavour = available_flavour()
    if flavour is None:
        skip("engines", "neither TensorRT (tensorrt) nor TensorRT-RTX (tensorrt_rtx) is installed")
        return []
    if missing("polygraphy", "onnx"):
        skip("engines", f"the builder needs {', '.join(missing('polygraphy', 'onnx'))}")
        return []
    if probe is None or not probe.gpus:
        skip("engines", "no GPU to build for (NVML)")
        return []
    from appliance.catalog import load_catalog  # noqa: PLC0415
    from appliance.engines.cache import EngineCache  # noqa: PLC0415
    from appliance.engines.plan import build_plan, distinct_targets  # noqa: PLC0415
    from appliance.modelstore import ModelStore  # noqa: PLC0415
    from appliance.resources import bundled_catalog_dir  # noqa: PLC0415

    catalog, store = load_catalog(bundled_catalog_dir()), ModelStore(model_dir)
    hashes = {m.model: store.expected_sha256(catalog.get(m.model)) or "" for m in node.models}
    plan = build_plan(node, catalog, distinct_targets(probe.gpus), onnx_sha256=hashes, settings=node.engines)
    cache = EngineCache(Path(node.engines.cache_dir), flavour=flavour)
    say(f"{cache.tensorrt}, cache {cache.directory}, {len(plan)} engine(s)")
    built = []
    for engine in plan:
        if budget.left() < 120:
            skip(f"engine {engine.model} for {engine.gpu.name}", "time budget spent")
            continue
        result = cache.build(engine, store.verified_path(catalog.get(engine.model)))
        detail = result.reason if result.outcome == "failed" else result.path.name
        say(f"  {engine.model:18} {engine.gpu.name:26} {result.outcome:7} {result.seconds:6.1f} s  {detail}")
        if result.outcome != "failed":
            built.append((engine, cache))
    return built


# --- 5. accuracy and 6. latency ------------------------------------------------------------------------------


def model_input(manifest: Any, size: int) -> Any:
    """The photo as the model's pipeline would feed it, at size × size."""
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from appliance.pipelines.base import image_to_chw, normalise  # noqa: PLC0415

    image = Image.open(PHOTO).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    params = manifest.processing
    if manifest.capability == "upscale":
        return image_to_chw(image, scale=1 / 255)
    tensor = normalise(image_to_chw(image, scale=1 / 255), params.mean, params.std)
    return np.ascontiguousarray(tensor, dtype=np.float32)


def sizes_for(manifest: Any) -> list[int]:
    tensor = manifest.inputs[0]
    low, high = tensor.min_shape, tensor.max_shape
    if low and high and low[2:] == high[2:]:
        return [int(low[2])]  # a fixed input size
    return [s for s in SIZES if not (low and high) or low[2] <= s <= high[2]]


def median_ms(run: Callable[[], Any], budget_s: float) -> float:
    for _ in range(2):  # warm-up
        run()
    samples: list[float] = []
    started = time.monotonic()
    while len(samples) < 20 and (len(samples) < 3 or time.monotonic() - started < budget_s):
        t = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def part_accuracy(model_dir: Path, built: list[Any]) -> tuple[bool, dict[str, Any]]:
    """Each model's engine (the first built for it) against onnxruntime CPU; (all passed, model → engine)."""
    import numpy as np  # noqa: PLC0415

    from appliance.backends.onnxruntime import OnnxRuntimeBackend  # noqa: PLC0415
    from appliance.backends.tensorrt import TensorRTBackend  # noqa: PLC0415
    from appliance.catalog import load_catalog  # noqa: PLC0415
    from appliance.modelstore import ModelStore  # noqa: PLC0415
    from appliance.resources import bundled_catalog_dir  # noqa: PLC0415

    say("== accuracy (engine vs onnxruntime CPU, relative L2 error)")
    catalog, store = load_catalog(bundled_catalog_dir()), ModelStore(model_dir)
    engines: dict[str, Any] = {}
    if not built:
        skip("accuracy", "no engine was built here")
    ok = True
    for engine, cache in built:
        if engine.model in engines:
            continue
        try:
            data = cache.verified_bytes(engine)
            backend = TensorRTBackend(data, flavour=cache.flavour, capacity=1, label=engine.model)
        except Exception as exc:  # a finding, not a crash
            say(f"FAIL {engine.model}: the engine does not load: {exc}")
            ok = False
            continue
        engines[engine.model] = backend
        manifest = catalog.get(engine.model)
        cpu = OnnxRuntimeBackend(store.verified_path(manifest), providers=["CPUExecutionProvider"], intra_op_threads=0)
        limit = TOLERANCE.get(engine.key.precision, 1e-2)
        for size in sizes_for(manifest):
            feeds = {manifest.inputs[0].name: model_input(manifest, size)}
            name = manifest.outputs[0].name
            ours, theirs = backend.run(feeds, [name])[0], cpu.run(feeds, [name])[0]
            rel = float(np.linalg.norm(ours - theirs) / max(float(np.linalg.norm(theirs)), 1e-12))
            verdict = "PASS" if rel <= limit else "FAIL"
            ok &= verdict == "PASS"
            say(
                f"{verdict} {engine.model:18} {size}²  rel L2 {rel:.2e} (≤ {limit:g}, {engine.key.precision}), "
                f"max |Δ| {float(np.max(np.abs(ours - theirs))):.3g}"
            )
    return ok, engines


def part_latency(node: Any, model_dir: Path, engines: dict[str, Any], budget: Budget) -> None:
    import onnxruntime as ort  # noqa: PLC0415

    from appliance.backends.onnxruntime import OnnxRuntimeBackend  # noqa: PLC0415
    from appliance.catalog import load_catalog  # noqa: PLC0415
    from appliance.modelstore import ModelStore  # noqa: PLC0415
    from appliance.resources import bundled_catalog_dir  # noqa: PLC0415

    say("== latency (median ms per inference, copies in and out included)")
    catalog, store = load_catalog(bundled_catalog_dir()), ModelStore(model_dir)
    gpu_ort = "CUDAExecutionProvider" in ort.get_available_providers()
    if not engines:
        skip("latency tensorrt", "no engine loaded here (see above)")
    if not gpu_ort:
        skip("latency onnxruntime-cuda", "this onnxruntime has no CUDA provider (onnxruntime-gpu not installed)")
    say(f"{'model':18} {'size':>5} {'tensorrt':>10} {'ort-cuda':>10} {'ort-cpu':>10}")
    for served in dict.fromkeys(m.model for m in node.models):
        manifest = catalog.get(served)
        path = store.verified_path(manifest)
        cuda = None
        if gpu_ort:
            candidate = OnnxRuntimeBackend(
                path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], intra_op_threads=0
            )
            cuda = candidate if candidate.providers[0] == "CUDAExecutionProvider" else None
            if cuda is None:
                say(f"  {served}: onnxruntime lists CUDA but the session runs on {candidate.providers}")
        cpu = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"], intra_op_threads=0)
        for size in sizes_for(manifest):
            if budget.left() < 20:
                skip(f"latency {served} {size}²", "time budget spent")
                continue
            feeds = {manifest.inputs[0].name: model_input(manifest, size)}
            cells = []
            for backend in (engines.get(served), cuda, cpu):
                if backend is None:
                    cells.append("—")
                    continue
                seconds = min(5.0, budget.left() / 20)
                cells.append(f"{median_ms(lambda b=backend, f=feeds: b.run(f), seconds):.2f}")
            say(f"{served:18} {size:>5} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10}")
    say("(—: that runtime is not available here; see the SKIP lines above)")


# --- main ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=REPO / "var" / "models", help="verified model files")
    parser.add_argument("--cache-dir", type=Path, help="engine cache (default: a fresh temporary folder)")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for everything (default 450)")
    args = parser.parse_args(argv)
    budget = Budget(args.budget)
    say(f"gpu_check: python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    probe = part_gpus()
    if missing("msgspec"):
        skip("everything else", "the appliance's dependencies are not installed (msgspec missing)")
        return 0
    from appliance.config import load_node_text  # noqa: PLC0415

    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="gpu_check_engines_"))
    models = present_models(args.model_dir.expanduser())
    if not models:
        skip("worker, ladder, engines, accuracy, latency", f"no verified model files in {args.model_dir}")
        return 0
    text = node_text(args.model_dir.expanduser(), cache_dir, models, args.precision)
    node_file = Path(tempfile.mkdtemp(prefix="gpu_check_node_")) / "node.toml"
    node_file.write_text(text)
    node = load_node_text(text, source=str(node_file))
    ok = True
    built = part_engines(node, args.model_dir.expanduser(), probe, budget)
    part_ladder(node, args.model_dir.expanduser(), probe)  # after the build: the engines are in the cache
    ok &= part_worker(node_file, budget)
    if missing("onnxruntime", "numpy", "PIL"):
        skip("accuracy, latency", f"needs {', '.join(missing('onnxruntime', 'numpy', 'PIL'))}")
    else:
        passed, engines = part_accuracy(args.model_dir.expanduser(), built)
        part_latency(node, args.model_dir.expanduser(), engines, budget)
        ok &= passed
    say(f"gpu_check: {'ok' if ok else 'FAILED'} in {args.budget - budget.left():.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
