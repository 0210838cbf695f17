"""What every pipeline is: decoded image in, image out, through one backend; plus the shared tensor helpers.

A pipeline owns pre- and post-processing only. Decoding the upload and encoding the answer are the server's,
and the backend (session) is created by the ladder and handed in, so a pipeline never picks its runtime.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

import msgspec
import numpy as np
from PIL import Image

from appliance.backends.base import Backend
from appliance.catalog import Manifest

__all__ = ["NoOptions", "Pipeline", "chw_to_image", "image_to_chw", "normalise"]


class NoOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Per-request options of a pipeline that has none."""


OptionsT = TypeVar("OptionsT", bound=msgspec.Struct)
ParamsT = TypeVar("ParamsT", bound=msgspec.Struct)


class Pipeline(ABC, Generic[OptionsT, ParamsT]):
    # The manifest's processing parameters this pipeline reads (also names its capability).
    params_type: ClassVar[type[msgspec.Struct]]
    # The per-request options this pipeline accepts (form fields / query parameters), decoded strictly.
    options_type: ClassVar[type[msgspec.Struct]]

    def __init__(self, manifest: Manifest, backend: Backend) -> None:
        if not isinstance(manifest.processing, self.params_type):
            raise TypeError(f"{type(self).__name__} cannot serve a {manifest.capability!r} manifest")
        self.manifest = manifest
        self.params: ParamsT = manifest.processing  # type: ignore[assignment]
        self.backend = backend
        self.input_name = manifest.inputs[0].name
        self.output_name = manifest.outputs[0].name

    @abstractmethod
    def process(self, image: Image.Image, options: OptionsT) -> Image.Image:
        """Run the model on one decoded RGB/RGBA image. Raises BackendError if inference fails."""

    def warmup(self) -> None:
        """One real inference on a synthetic image, so the first request pays no lazy initialisation."""
        gradient = np.linspace(0, 255, 96 * 96 * 3, dtype=np.float32).reshape(96, 96, 3).astype(np.uint8)
        self.process(Image.fromarray(gradient), self.options_type())  # type: ignore[arg-type]


def image_to_chw(image: Image.Image, *, scale: float) -> np.ndarray:
    """RGB image → float32 array of shape (1, 3, H, W), pixel values multiplied by ``scale``."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray((rgb * scale).transpose(2, 0, 1)[np.newaxis])


def normalise(pixels: np.ndarray, mean: tuple[float, float, float], std: tuple[float, float, float]) -> np.ndarray:
    """Per-channel (x - mean) / std on a (1, 3, H, W) array."""
    return (pixels - np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)) / np.asarray(
        std, dtype=np.float32
    ).reshape(1, 3, 1, 1)


def chw_to_image(array: np.ndarray, *, scale: float) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) float array → RGB image, values divided by ``scale`` then clipped to 0..255."""
    chw = array[0] if array.ndim == 4 else array
    rgb = np.clip(chw.transpose(1, 2, 0) / scale, 0.0, 255.0)
    return Image.fromarray(np.rint(rgb).astype(np.uint8))
