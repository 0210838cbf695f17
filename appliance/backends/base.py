"""The interface every backend implements: onnxruntime sessions and TensorRT engines alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

__all__ = ["Backend", "BackendError", "BackendInputError"]


class BackendError(Exception):
    """A backend could not be created or could not run; the message says which model and why."""


class BackendInputError(BackendError):
    """The inputs are outside what this backend accepts (a TensorRT engine's shape profile, say): the caller's
    request is at fault, not the model, and the message says what was sent and what is accepted."""


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

        Raises BackendInputError when an input's shape is outside what the backend accepts, BackendError when the
        graph fails; the backend stays usable either way.
        """
        ...
