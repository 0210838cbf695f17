"""A double of onnxruntime-gpu's provider report on a host whose GPU it cannot use. Not onnxruntime-gpu.

Why a double: onnxruntime-gpu and onnxruntime overwrite each other's files, so they are never installed together,
and CI has the CPU wheel and no GPU. What it mirrors (DESIGN.md, "Facts about the runtime", and onnxruntime's
own Python wrapper, ``onnxruntime_inference_collection.py``):

- ``get_available_providers()`` *lists* the TensorRT and CUDA providers whatever the hardware;
- a session asked for them is still created and runs on the CPU; ``get_providers()`` reports only the providers
  that initialised (``working``: the CPU provider alone by default);
- a provider listed in ``failing`` raises when the session is created, as a provider whose libraries do not load
  does; with the session's fallback enabled (onnxruntime's default) the wrapper then retries once with its
  fallback providers (CUDA + CPU when TensorRT and CUDA were both asked for, else CPU), with
  ``enable_fallback=0`` the error reaches the caller;
- provider options are normalised to strings, a provider that is not listed draws onnxruntime's warning, and the
  TensorRT / CUDA providers refuse an option they do not know.

The session underneath is a real onnxruntime CPU session, so inputs, outputs and results are real.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import onnxruntime
import pytest

__all__ = ["GPU_LISTED", "OnnxRuntimeGpuDouble"]

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
GPU_LISTED = (TRT, CUDA, CPU)

_RealSession = onnxruntime.InferenceSession

# The provider options onnxruntime 1.2x-1.3x accepts (its docs for each provider); anything else is refused.
_KNOWN_OPTIONS = {
    TRT: {
        "device_id",
        "trt_max_workspace_size",
        "trt_fp16_enable",
        "trt_bf16_enable",
        "trt_int8_enable",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_engine_cache_prefix",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_force_timing_cache",
        "trt_builder_optimization_level",
        "trt_profile_min_shapes",
        "trt_profile_opt_shapes",
        "trt_profile_max_shapes",
        "trt_cuda_graph_enable",
        "trt_engine_hw_compatible",
    },
    CUDA: {"device_id", "gpu_mem_limit", "arena_extend_strategy", "cudnn_conv_algo_search", "enable_cuda_graph"},
    CPU: set(),
}


@dataclass
class OnnxRuntimeGpuDouble:
    listed: Sequence[str] = GPU_LISTED
    working: Sequence[str] = (CPU,)
    failing: dict[str, str] = field(default_factory=dict)
    sessions: list[dict[str, Any]] = field(default_factory=list)  # each session asked for: providers, options

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(self.listed))
        monkeypatch.setattr(onnxruntime, "InferenceSession", self._session_class())

    def _normalise(self, providers: Sequence[Any]) -> tuple[list[str], dict[str, dict[str, str]]]:
        names, options = [], {}
        for provider in providers:
            name, given = (provider[0], provider[1]) if isinstance(provider, tuple) else (provider, {})
            if name not in self.listed:
                warnings.warn(
                    f"Specified provider '{name}' is not in available provider names."
                    f"Available providers: '{', '.join(self.listed)}'",
                    stacklevel=3,
                )
            unknown = set(given) - _KNOWN_OPTIONS.get(name, set())
            if unknown:
                raise RuntimeError(f"[ONNXRuntimeError] : 1 : FAIL : Unknown provider option: {sorted(unknown)}")
            names.append(name)
            options[name] = {str(k): str(v) for k, v in given.items()}
        return names, options

    def _session_class(self) -> type:
        double = self

        class InferenceSession:
            def __init__(
                self,
                path_or_bytes: Any,
                sess_options: Any = None,
                providers: Sequence[Any] | None = None,
                provider_options: Any = None,
                **kwargs: Any,
            ) -> None:
                names, options = double._normalise(providers or [CPU])
                double.sessions.append({"providers": names, "options": options})
                failing = [n for n in names if n in double.failing]
                if failing:
                    if int(kwargs.get("enable_fallback", 1)) != 1:
                        raise RuntimeError(double.failing[failing[0]])
                    names = [CUDA, CPU] if (TRT in names and CUDA in names) else [CPU]
                    names = [n for n in names if n not in double.failing]
                self._providers = [n for n in names if n in double.working and n != CPU] + [CPU]
                self._session = _RealSession(path_or_bytes, sess_options=sess_options, providers=[CPU])

            def get_providers(self) -> list[str]:
                return list(self._providers)

            def get_inputs(self) -> Any:
                return self._session.get_inputs()

            def get_outputs(self) -> Any:
                return self._session.get_outputs()

            def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
                return self._session.run(output_names, input_feed, run_options)

        return InferenceSession
