"""Salient-object segmentation (U²-Net): a grey mask PNG, or the input cut out as RGBA on request."""

from __future__ import annotations

from typing import ClassVar

import msgspec
import numpy as np
from PIL import Image

from appliance.catalog import SegmentationParams
from appliance.imaging import resize_array
from appliance.pipelines.base import Pipeline, image_to_chw, normalise

__all__ = ["SegmentationOptions", "SegmentationPipeline"]


class SegmentationOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    cutout: bool = False
    """Return the input with the mask as its alpha channel instead of the mask itself."""


class SegmentationPipeline(Pipeline[SegmentationOptions, SegmentationParams]):
    params_type: ClassVar[type[SegmentationParams]] = SegmentationParams
    options_type: ClassVar[type[SegmentationOptions]] = SegmentationOptions

    def process(self, image: Image.Image, options: SegmentationOptions) -> Image.Image:
        size = self.params.size
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        pixels = image_to_chw(resized, scale=1.0)
        pixels /= max(float(pixels.max()), 1e-6)  # U²-Net was trained on images scaled by their own maximum
        feeds = {self.input_name: normalise(pixels, self.params.mean, self.params.std)}
        saliency = self.backend.run(feeds, [self.output_name])[0][0, 0]
        low, high = float(saliency.min()), float(saliency.max())
        saliency = (saliency - low) / max(high - low, 1e-6)
        mask = resize_array(saliency, image.width, image.height)
        mask_image = Image.fromarray(np.rint(np.clip(mask, 0.0, 1.0) * 255).astype(np.uint8))
        if not options.cutout:
            return mask_image
        cutout = image.convert("RGBA")
        cutout.putalpha(mask_image)
        return cutout
