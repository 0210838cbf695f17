"""The backend ladder: the fastest backend that really works on this host, with the reason it was chosen.

Today: onnxruntime with the CUDA provider where it initialises, else onnxruntime on the CPU. TensorRT engines
and onnxruntime's TensorRT provider slot in above these (the engines issue).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from appliance.backends.base import Backend
from appliance.backends.onnxruntime import OnnxRuntimeBackend

__all__ = ["BackendChoice", "create_backend"]


@dataclass(frozen=True)
class BackendChoice:
    backend: Backend
    reason: str


def create_backend(model_path: Path, *, intra_op_threads: int, allow_gpu: bool = True) -> BackendChoice:
    """Create the best backend for ``model_path``; raises BackendError when not even the CPU one loads."""
    available = ort.get_available_providers()
    if allow_gpu and "CUDAExecutionProvider" in available:
        backend = OnnxRuntimeBackend(
            model_path,
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
            intra_op_threads=intra_op_threads,
        )
        # onnxruntime-gpu lists CUDA even with no GPU and silently falls back: believe the session, not the list.
        if backend.providers[0] == "CUDAExecutionProvider":
            return BackendChoice(backend, "CUDA provider initialised")
        return BackendChoice(backend, "CUDA provider listed but did not initialise (no GPU or driver)")
    backend = OnnxRuntimeBackend(model_path, providers=["CPUExecutionProvider"], intra_op_threads=intra_op_threads)
    reason = "GPU backends disabled" if not allow_gpu else "no GPU provider in this onnxruntime build"
    return BackendChoice(backend, reason)
