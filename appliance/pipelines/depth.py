"""Relative depth (Depth-Anything-V2 pre/post-processing): a normalised 16-bit grey PNG, near is bright.

The longer side is resized to ``size`` and both sides rounded to a multiple of ``multiple`` (14 for a ViT with
14-pixel patches); the map is normalised to the full 16-bit range and resized back to the input's size.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec
import numpy as np
from PIL import Image

from appliance.catalog import DepthParams
from appliance.imaging import resize_array
from appliance.pipelines.base import Pipeline, image_to_chw, normalise

__all__ = ["DepthOptions", "DepthPipeline", "colorize"]

# Anchor colours of the optional colour map, far (dark blue) to near (warm yellow); interpolated linearly.
_PALETTE = np.array(
    [
        [13, 8, 135],
        [84, 2, 163],
        [139, 10, 165],
        [185, 50, 137],
        [219, 92, 104],
        [244, 136, 73],
        [254, 188, 43],
        [240, 249, 33],
    ],
    dtype=np.float32,
)


class DepthOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    colormap: bool = False
    """Return an 8-bit RGB visualisation instead of the 16-bit grey map."""


def colorize(depth: np.ndarray) -> Image.Image:
    """A 0..1 depth map → RGB image through the palette."""
    positions = np.clip(depth, 0.0, 1.0) * (len(_PALETTE) - 1)
    index = np.minimum(positions.astype(np.int32), len(_PALETTE) - 2)
    fraction = (positions - index)[..., np.newaxis]
    rgb = _PALETTE[index] * (1 - fraction) + _PALETTE[index + 1] * fraction
    return Image.fromarray(np.rint(rgb).astype(np.uint8))


class DepthPipeline(Pipeline[DepthOptions, DepthParams]):
    params_type: ClassVar[type[DepthParams]] = DepthParams
    options_type: ClassVar[type[DepthOptions]] = DepthOptions

    def network_size(self, width: int, height: int) -> tuple[int, int]:
        """Input size for the net: longer side ≈ ``size``, aspect kept, both sides multiples of ``multiple``."""
        ratio = self.params.size / max(width, height)
        multiple = self.params.multiple

        def fit(side: int) -> int:
            return max(multiple, round(side * ratio / multiple) * multiple)

        return fit(width), fit(height)

    def process(self, image: Image.Image, options: DepthOptions) -> Image.Image:
        net_w, net_h = self.network_size(image.width, image.height)
        resized = image.convert("RGB").resize((net_w, net_h), Image.Resampling.BICUBIC)
        pixels = image_to_chw(resized, scale=1 / 255)
        feeds = {self.input_name: normalise(pixels, self.params.mean, self.params.std)}
        raw = self.backend.run(feeds, [self.output_name])[0]
        depth = raw.reshape(raw.shape[-2], raw.shape[-1]).astype(np.float32)  # NHW or NCHW with N = C = 1
        # Normalise after resizing back, so the answer spans the full 0..65535 range at the input's size.
        depth = resize_array(depth, image.width, image.height)
        low, high = float(depth.min()), float(depth.max())
        depth = np.clip((depth - low) / max(high - low, 1e-12), 0.0, 1.0)
        if options.colormap:
            return colorize(depth)
        return Image.fromarray(np.rint(depth * 65535).astype(np.uint16))
