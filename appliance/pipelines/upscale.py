"""Super-resolution (waifu2x and other fully convolutional nets), run on overlapping tiles.

Each tile is cut from the border-padded image with ``border`` pixels of context on every side; the net eats
exactly that context, so the tiles' outputs meet without seams and memory stays bounded by the tile size.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from PIL import Image

from appliance.catalog import UpscaleParams
from appliance.pipelines.base import NoOptions, Pipeline

__all__ = ["UpscalePipeline"]


class UpscalePipeline(Pipeline[NoOptions, UpscaleParams]):
    params_type: ClassVar[type[UpscaleParams]] = UpscaleParams
    options_type: ClassVar[type[NoOptions]] = NoOptions

    def process(self, image: Image.Image, options: NoOptions) -> Image.Image:
        alpha = image.getchannel("A") if image.mode == "RGBA" else None
        upscaled = Image.fromarray(self.upscale_pixels(np.asarray(image.convert("RGB"))))
        if alpha is not None:  # the net sees RGB only; the alpha channel is resized alongside
            upscaled.putalpha(alpha.resize(upscaled.size, Image.Resampling.BICUBIC))
        return upscaled

    def upscale_pixels(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 → (sH, sW, 3) uint8, tile by tile.

        Memory: the image, its border-padded copy and the output, all 8-bit, plus one tile in float32.
        """
        scale, tile, border, multiple = self.params.scale, self.params.tile, self.params.border, self.params.multiple
        height, width, _ = rgb.shape
        padded = np.pad(rgb, ((border, border), (border, border), (0, 0)), mode="edge")
        min_shape = self.manifest.inputs[0].min_shape
        min_h, min_w = (min_shape[2], min_shape[3]) if min_shape else (0, 0)
        out = np.empty((height * scale, width * scale, 3), dtype=np.uint8)
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                tile_h, tile_w = min(tile, height - top), min(tile, width - left)
                window = padded[top : top + tile_h + 2 * border, left : left + tile_w + 2 * border]
                # Round the window up to the net's multiple, and to the smallest input its engine takes (a TensorRT
                # profile's min); the extra rows/columns lie past the border the net reads, and are cropped.
                extra_h = max(-window.shape[0] % multiple, min_h - window.shape[0])
                extra_w = max(-window.shape[1] % multiple, min_w - window.shape[1])
                if extra_h or extra_w:
                    window = np.pad(window, ((0, extra_h), (0, extra_w), (0, 0)), mode="edge")
                tensor = window.transpose(2, 0, 1)[np.newaxis].astype(np.float32) * np.float32(1 / 255)
                result = self.backend.run({self.input_name: tensor}, [self.output_name])[0]
                crop = result[0, :, : tile_h * scale, : tile_w * scale].transpose(1, 2, 0)
                out[top * scale : (top + tile_h) * scale, left * scale : (left + tile_w) * scale] = np.rint(
                    np.clip(crop * 255, 0, 255)
                )
        return out
