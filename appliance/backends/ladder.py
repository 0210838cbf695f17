"""The backend ladder: per model, the fastest backend that really works on this host, and why each faster one
did not.

Rungs, fastest first; each is tried only where it can apply:

1. ``tensorrt`` (or ``tensorrt-rtx``): the engine cache holds an engine for this model on this worker's GPU whose
   record matches and whose bytes match their sha256 (``EngineCache``), and TensorRT loads it;
2. ``onnxruntime-tensorrt``: onnxruntime's TensorRT provider, with its own engine and timing caches under
   ``<engines.cache_dir>/ort-trt/<gpu>/``, fp16 per ``engines.precision``, profiles from the manifest;
3. ``onnxruntime-cuda``;
4. ``onnxruntime-cpu``, always.

A rung that raises, or whose session does not report its provider once created (onnxruntime-gpu lists providers
it cannot use and falls back silently, so the list is never trusted), falls to the next. The reasons are kept in
order: ``BackendChoice.reason`` reads like "tensorrt: no GPU (…); onnxruntime-tensorrt: provider not in this
onnxruntime build; onnxruntime-cuda: …; onnxruntime-cpu". :func:`predict_backend` walks the same rungs without
loading anything, for ``lpa doctor``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort
import structlog

from appliance.backends.base import Backend, BackendError
from appliance.backends.onnxruntime import OnnxRuntimeBackend, Provider
from appliance.catalog import Manifest
from appliance.engines.builder import available_flavour
from appliance.engines.cache import EngineCache, EngineRefused
from appliance.engines.plan import GpuTarget, PlanError, PlannedEngine, plan_engine
from appliance.engines.settings import EngineSettings
from appliance.gpu import GpuDevice, GpuProbe, probe_gpus

__all__ = [
    "RUNGS",
    "BackendChoice",
    "EngineRequest",
    "HostFacts",
    "Prediction",
    "create_backend",
    "host_facts",
    "predict_backend",
]

log = structlog.get_logger("appliance.backends")

RUNGS = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")
_TRT_EP, _CUDA_EP, _CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


@dataclass(frozen=True)
class HostFacts:
    """What the ladder needs to know about this host, gathered once per worker."""

    allow_gpu: bool
    gpu: GpuDevice | None  # the GPU this worker runs on (NVML's view), None when there is none
    no_gpu: str | None  # why gpu is None
    cuda_index: int  # the same GPU's CUDA device index inside this process
    providers: tuple[str, ...]  # onnxruntime's *listed* providers: a hint for which rungs to try, never proof
    flavour: str | None  # the TensorRT flavour installed ("tensorrt", "tensorrt-rtx"), None when neither is
    cuda_wrapper: bool  # polygraphy (its CUDA wrapper) is installed

    @property
    def target(self) -> GpuTarget | None:
        return GpuTarget(self.gpu.name, self.gpu.major, self.gpu.minor) if self.gpu else None


def _visible_gpu(probe: GpuProbe, gpu_index: int | None) -> tuple[GpuDevice | None, int, str | None]:
    """(device, CUDA index, why none) for this worker.

    ``CUDA_VISIBLE_DEVICES`` (set per instance by the ``livepeer-worker@N`` unit) names the GPU by NVML index or
    UUID, and the process then sees it as CUDA device 0; the numbers agree with NVML's when
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``. Without it, ``gpu_index`` (the instance's GPU, else 0) is used as is.
    """
    if not probe.gpus:
        return None, 0, probe.problem or "NVML found no GPU"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        first = visible.split(",")[0].strip()
        if first.isdigit():
            found = [g for g in probe.gpus if g.index == int(first)]
        else:
            found = [g for g in probe.gpus if first and g.uuid.startswith(first)]
        if not found:
            return None, 0, f"CUDA_VISIBLE_DEVICES={visible!r} names no GPU that NVML sees"
        return found[0], 0, None
    index = gpu_index or 0
    found = [g for g in probe.gpus if g.index == index]
    if not found:
        return None, 0, f"GPU {index} is not among the {len(probe.gpus)} NVML sees"
    return found[0], index, None


def host_facts(*, allow_gpu: bool, gpu_index: int | None = None, probe: GpuProbe | None = None) -> HostFacts:
    """This host as the ladder sees it; probes NVML unless GPUs are disabled or ``probe`` is given."""
    if allow_gpu:
        gpu, cuda_index, no_gpu = _visible_gpu(probe or probe_gpus(), gpu_index)
    else:
        gpu, cuda_index, no_gpu = None, 0, "GPU backends disabled (--cpu-only)"
    return HostFacts(
        allow_gpu=allow_gpu,
        gpu=gpu,
        no_gpu=no_gpu,
        cuda_index=cuda_index,
        providers=tuple(ort.get_available_providers()),
        flavour=available_flavour(),
        cuda_wrapper=importlib.util.find_spec("polygraphy") is not None,
    )


@dataclass(frozen=True)
class EngineRequest:
    """The model, as the engine cache keys it: which engine would serve it on this GPU."""

    model: str
    manifest: Manifest
    onnx_sha256: str
    settings: EngineSettings = field(default_factory=EngineSettings)

    @property
    def cache_dir(self) -> Path:
        return Path(self.settings.cache_dir).expanduser()


@dataclass(frozen=True)
class BackendChoice:
    backend: Backend
    reason: str  # every rung above the chosen one with why it was passed over, then the chosen one
    steps: tuple[tuple[str, str], ...] = ()  # (rung, why not) for each rung passed over


@dataclass(frozen=True)
class Prediction:
    """What the ladder would choose (``lpa doctor``): nothing is loaded, built or run."""

    backend: str
    reason: str


@dataclass(frozen=True)
class _Ask:
    model_path: Path
    intra_op_threads: int
    capacity: int
    engine: EngineRequest | None
    host: HostFacts


class _Fell(Exception):
    """A rung was tried and did not work; the message says why."""


def _gpu_words(gpu: GpuDevice) -> str:
    return f"{gpu.name} sm_{gpu.major}{gpu.minor}"


# --- rung 1: a TensorRT engine from the engine cache ------------------------------------------------------------


def _tensorrt_missing(host: HostFacts) -> str | None:
    """Why this host cannot run TensorRT engines at all, or None."""
    if host.gpu is None:
        return f"no GPU ({host.no_gpu})"
    if host.flavour is None:
        return "TensorRT is not installed (neither tensorrt nor tensorrt_rtx)"
    if not host.cuda_wrapper:
        return "polygraphy (the CUDA wrapper it runs engines with) is not installed"
    if host.cuda_index != 0:
        return f"GPU {host.gpu.index} is CUDA device {host.cuda_index}: run the worker with CUDA_VISIBLE_DEVICES"
    return None


def _engine(ask: _Ask) -> tuple[EngineCache, PlannedEngine] | str:
    """The cache and the engine this model needs on this GPU, or why the rung cannot apply."""
    host, request = ask.host, ask.engine
    missing = _tensorrt_missing(host)
    if missing is not None or host.target is None or host.flavour is None:
        return missing or "no GPU"
    if request is None:
        return "no engine key for this model (no manifest given)"
    try:
        engine = plan_engine(
            request.model, request.manifest, host.target, onnx_sha256=request.onnx_sha256, settings=request.settings
        )
    except PlanError as exc:
        return str(exc)
    return EngineCache(request.cache_dir, flavour=host.flavour), engine


def _tensorrt_blocked(ask: _Ask) -> str | None:
    found = _engine(ask)
    if isinstance(found, str):
        return found
    cache, engine = found
    refusal = cache.refusal(engine)
    if refusal == "not built":
        assert ask.host.gpu is not None
        return f"no engine for {_gpu_words(ask.host.gpu)} in the cache ({cache.explain_missing(engine)})"
    if refusal is not None:
        return f"engine {cache.path_for(engine).name} refused: {refusal}"
    return None


def _tensorrt_create(ask: _Ask) -> Backend:
    from appliance.backends.tensorrt import TensorRTBackend  # noqa: PLC0415 (only where an engine is served)

    found = _engine(ask)
    if isinstance(found, str):
        raise _Fell(found)
    cache, engine = found
    try:
        data = cache.verified_bytes(engine)
    except EngineRefused as exc:
        raise _Fell(f"engine {cache.path_for(engine).name} refused: {exc}") from None
    assert ask.host.flavour is not None
    return TensorRTBackend(data, flavour=ask.host.flavour, capacity=ask.capacity, label=cache.path_for(engine).name)


# --- rungs 2-4: onnxruntime providers ---------------------------------------------------------------------------


def _provider_blocked(provider: str) -> Callable[[_Ask], str | None]:
    def blocked(ask: _Ask) -> str | None:
        if provider not in ask.host.providers:
            return "provider not in this onnxruntime build"
        if ask.host.gpu is None:
            return f"no GPU ({ask.host.no_gpu})"
        return None

    return blocked


def _shapes(ask: _Ask, which: str) -> str:
    """A manifest's profile as onnxruntime's TensorRT provider takes it: ``input:1x3x32x32,other:…``."""
    assert ask.engine is not None
    parts = []
    for tensor in ask.engine.manifest.inputs:
        shape = getattr(tensor, f"{which}_shape")
        if shape is None:
            return ""
        parts.append(f"{tensor.name}:{'x'.join(map(str, shape))}")
    return ",".join(parts)


def _ort_tensorrt_options(ask: _Ask) -> dict[str, Any]:
    """The TensorRT provider's options: its own engine and timing caches per GPU model, fp16 per the node file,
    and the manifest's shape profile (without one it rebuilds its engine whenever a larger shape arrives)."""
    assert ask.host.target is not None
    settings = ask.engine.settings if ask.engine else EngineSettings()
    directory = Path(settings.cache_dir).expanduser() / "ort-trt" / ask.host.target.slug
    directory.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "device_id": ask.host.cuda_index,
        "trt_fp16_enable": settings.precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(directory),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(directory),
        "trt_builder_optimization_level": settings.optimization_level,
    }
    if ask.engine is not None and all(_shapes(ask, which) for which in ("min", "opt", "max")):
        options |= {f"trt_profile_{which}_shapes": _shapes(ask, which) for which in ("min", "opt", "max")}
    return options


def _session(ask: _Ask, providers: list[Provider], wanted: str) -> Backend:
    backend = OnnxRuntimeBackend(
        ask.model_path, providers=providers, intra_op_threads=ask.intra_op_threads, fallback=False
    )
    if backend.providers[0] != wanted:  # believe the session, never the list
        raise _Fell(f"listed, but the session runs on {', '.join(backend.providers)}")
    return backend


def _ort_tensorrt_create(ask: _Ask) -> Backend:
    cuda = (_CUDA_EP, {"device_id": ask.host.cuda_index})
    return _session(ask, [(_TRT_EP, _ort_tensorrt_options(ask)), cuda, _CPU_EP], _TRT_EP)


def _ort_cuda_create(ask: _Ask) -> Backend:
    return _session(ask, [(_CUDA_EP, {"device_id": ask.host.cuda_index}), _CPU_EP], _CUDA_EP)


def _cpu_create(ask: _Ask) -> Backend:
    return OnnxRuntimeBackend(ask.model_path, providers=[_CPU_EP], intra_op_threads=ask.intra_op_threads)


def _gpu_only(blocked: Callable[[_Ask], str | None]) -> Callable[[_Ask], str | None]:
    def check(ask: _Ask) -> str | None:
        return "GPU backends disabled (--cpu-only)" if not ask.host.allow_gpu else blocked(ask)

    return check


# (rung, why it cannot apply (cheap: loads and builds nothing), create it (raises when it does not work))
_LADDER: tuple[tuple[str, Callable[[_Ask], str | None], Callable[[_Ask], Backend]], ...] = (
    ("tensorrt", _gpu_only(_tensorrt_blocked), _tensorrt_create),
    ("onnxruntime-tensorrt", _gpu_only(_provider_blocked(_TRT_EP)), _ort_tensorrt_create),
    ("onnxruntime-cuda", _gpu_only(_provider_blocked(_CUDA_EP)), _ort_cuda_create),
    ("onnxruntime-cpu", lambda ask: None, _cpu_create),
)
_PROVIDER_OF = {"onnxruntime-tensorrt": _TRT_EP, "onnxruntime-cuda": _CUDA_EP}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def create_backend(
    model_path: Path,
    *,
    intra_op_threads: int,
    allow_gpu: bool = True,
    capacity: int = 1,
    engine: EngineRequest | None = None,
    host: HostFacts | None = None,
) -> BackendChoice:
    """The fastest backend that works for ``model_path``; raises BackendError when not even the CPU one loads.

    ``engine`` names the model as the engine cache keys it (without it there is no TensorRT engine rung);
    ``host`` is gathered once per worker (:func:`host_facts`), here when not given.
    """
    facts = host or host_facts(allow_gpu=allow_gpu)
    if not allow_gpu and facts.allow_gpu:
        facts = host_facts(allow_gpu=False)
    ask = _Ask(model_path, intra_op_threads, capacity, engine, facts)
    steps: list[tuple[str, str]] = []
    model = engine.model if engine else model_path.name
    for rung, blocked, create in _LADDER:
        why = blocked(ask)
        if why is None:
            try:
                backend = create(ask)
            except Exception as exc:  # any failure of a rung is a reason to take the next one
                why = _first_line(exc)
                if rung == "onnxruntime-cpu":
                    chain = "; ".join(f"{r}: {w}" for r, w in steps)
                    raise BackendError(f"{why} (ladder: {chain})") from exc
                log.warning("backend rung failed", model=model, rung=rung, reason=why)
            else:
                chosen = backend.name if rung == "tensorrt" else rung
                reason = "; ".join([*(f"{r}: {w}" for r, w in steps), chosen])
                log.info("backend chosen", model=model, backend=backend.name, reason=reason)
                return BackendChoice(backend, reason, tuple(steps))
        steps.append((rung, why))
    raise AssertionError("the CPU rung always returns or raises")  # pragma: no cover


def predict_backend(
    model_path: Path,
    *,
    host: HostFacts,
    engine: EngineRequest | None = None,
    provider_verdicts: Mapping[str, str] | None = None,
) -> Prediction:
    """The rung :func:`create_backend` would take, and why not the faster ones, without loading anything.

    ``provider_verdicts`` (from ``lpa doctor``'s one-node test sessions: provider → "works" or why not) stands in
    for the session a rung would create; without it a listed provider is assumed to work.
    """
    ask = _Ask(model_path, 0, 1, engine, host)
    steps: list[str] = []
    for rung, blocked, _ in _LADDER:
        why = blocked(ask)
        provider = _PROVIDER_OF.get(rung)
        if why is None and provider and provider_verdicts is not None:
            verdict = provider_verdicts.get(provider, "not tried")
            why = None if verdict == "works" else verdict
        if why is None:
            if rung == "tensorrt":
                return Prediction(str(host.flavour), "; ".join([*steps, f"{host.flavour} (a valid engine is cached)"]))
            return Prediction(rung, "; ".join([*steps, rung]))
        steps.append(f"{rung}: {why}")
    raise AssertionError("the CPU rung always applies")  # pragma: no cover
