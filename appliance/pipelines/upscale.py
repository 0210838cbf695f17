"""Super-resolution (waifu2x and other fully convolutional nets), run on overlapping tiles.

Each tile is cut from the border-padded image with ``border`` pixels of context on every side; the net eats
exactly that context, so the tiles' outputs meet without seams and memory stays bounded by the tile size.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from PIL import Image

from appliance.catalog import UpscaleParams
from appliance.pipelines.base import NoOptions, Pipeline, chw_to_image, image_to_chw

__all__ = ["UpscalePipeline"]


class UpscalePipeline(Pipeline[NoOptions, UpscaleParams]):
    params_type: ClassVar[type[UpscaleParams]] = UpscaleParams
    options_type: ClassVar[type[NoOptions]] = NoOptions

    def process(self, image: Image.Image, options: NoOptions) -> Image.Image:
        alpha = image.getchannel("A") if image.mode == "RGBA" else None
        pixels = image_to_chw(image, scale=1 / 255)
        upscaled = chw_to_image(self.upscale_array(pixels), scale=1 / 255)
        if alpha is not None:  # the net sees RGB only; the alpha channel is resized alongside
            upscaled.putalpha(alpha.resize(upscaled.size, Image.Resampling.BICUBIC))
        return upscaled

    def upscale_array(self, pixels: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) in 0..1 → (1, 3, sH, sW), tile by tile."""
        scale, tile, border, multiple = (
            self.params.scale,
            self.params.tile,
            self.params.border,
            self.params.multiple,
        )
        _, channels, height, width = pixels.shape
        padded = np.pad(pixels, ((0, 0), (0, 0), (border, border), (border, border)), mode="edge")
        out = np.empty((1, channels, height * scale, width * scale), dtype=np.float32)
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                tile_h, tile_w = min(tile, height - top), min(tile, width - left)
                window = padded[:, :, top : top + tile_h + 2 * border, left : left + tile_w + 2 * border]
                # Round the window up to the net's multiple; the extra rows/columns are cropped afterwards.
                extra_h = -window.shape[2] % multiple
                extra_w = -window.shape[3] % multiple
                if extra_h or extra_w:
                    window = np.pad(window, ((0, 0), (0, 0), (0, extra_h), (0, extra_w)), mode="edge")
                result = self.backend.run({self.input_name: np.ascontiguousarray(window)}, [self.output_name])[0]
                out[:, :, top * scale : (top + tile_h) * scale, left * scale : (left + tile_w) * scale] = result[
                    :, :, : tile_h * scale, : tile_w * scale
                ]
        return out
