"""An onnxruntime session as a :class:`~appliance.backends.base.Backend`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from appliance.backends.base import BackendError

__all__ = ["PROVIDER_LABELS", "OnnxRuntimeBackend", "Provider"]

# A provider name, or (name, options) as onnxruntime takes it.
Provider = str | tuple[str, dict[str, Any]]

PROVIDER_LABELS = {
    "TensorrtExecutionProvider": "onnxruntime-tensorrt",
    "CUDAExecutionProvider": "onnxruntime-cuda",
    "CPUExecutionProvider": "onnxruntime-cpu",
}

ort.set_default_logger_severity(3)  # errors reach us as exceptions; keep onnxruntime's own stderr quiet


class OnnxRuntimeBackend:
    def __init__(
        self, model_path: Path, *, providers: Sequence[Provider], intra_op_threads: int, fallback: bool = True
    ) -> None:
        """``fallback=False``: a provider that fails to initialise raises, with its reason, instead of onnxruntime
        retrying quietly on its fallback providers (the ladder wants the reason, and takes the next rung itself)."""
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        extra = {} if fallback else {"enable_fallback": 0}  # read by onnxruntime's InferenceSession wrapper
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=list(providers), **extra
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for a bad file
            raise BackendError(f"onnxruntime cannot load {model_path.name}: {exc}") from exc
        # What the session really uses, not what was asked for: a provider that failed to initialise is dropped.
        self.providers: list[str] = list(self._session.get_providers())
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]

    @property
    def name(self) -> str:
        return PROVIDER_LABELS.get(self.providers[0], self.providers[0])

    @property
    def input_names(self) -> Sequence[str]:
        return self._inputs

    @property
    def output_names(self) -> Sequence[str]:
        return self._outputs

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        try:
            return list(self._session.run(list(outputs) if outputs else None, dict(feeds)))
        except Exception as exc:  # shape or type errors from onnxruntime
            raise BackendError(f"inference failed: {exc}") from exc
