"""Fast neural style transfer (Johnson et al.; ONNX model zoo): RGB 0..255 in and out at a fixed size."""

from __future__ import annotations

from typing import ClassVar

from PIL import Image

from appliance.catalog import StyleTransferParams
from appliance.pipelines.base import NoOptions, Pipeline, chw_to_image, image_to_chw

__all__ = ["StyleTransferPipeline"]


class StyleTransferPipeline(Pipeline[NoOptions, StyleTransferParams]):
    params_type: ClassVar[type[StyleTransferParams]] = StyleTransferParams
    options_type: ClassVar[type[NoOptions]] = NoOptions

    def process(self, image: Image.Image, options: NoOptions) -> Image.Image:
        size = self.params.size
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        styled = self.backend.run({self.input_name: image_to_chw(resized, scale=1.0)}, [self.output_name])[0]
        return chw_to_image(styled, scale=1.0).resize(image.size, Image.Resampling.BICUBIC)
