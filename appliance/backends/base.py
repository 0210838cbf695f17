"""The interface every backend implements (onnxruntime now; TensorRT engines behind the same one later)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

__all__ = ["Backend", "BackendError"]


class BackendError(Exception):
    """A backend could not be created or could not run; the message says which model and why."""


class Backend(Protocol):
    """A loaded model graph, safe to call from several threads at once."""

    @property
    def name(self) -> str:
        """Short label for logs and metrics, e.g. ``onnxruntime-cpu``."""
        ...

    @property
    def input_names(self) -> Sequence[str]: ...

    @property
    def output_names(self) -> Sequence[str]: ...

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        """Run the graph; ``outputs`` limits which outputs are computed (all when None).

        Raises BackendError when the graph rejects the inputs or fails; the backend stays usable.
        """
        ...
