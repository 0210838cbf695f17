"""One pipeline per capability; :func:`create_pipeline` picks it from the manifest's processing kind."""

from __future__ import annotations

from typing import Any

import msgspec

from appliance.backends.base import Backend
from appliance.catalog import (
    Capability,
    DepthParams,
    Manifest,
    SegmentationParams,
    StyleTransferParams,
    UpscaleParams,
)
from appliance.pipelines.base import NoOptions, Pipeline
from appliance.pipelines.depth import DepthOptions, DepthPipeline
from appliance.pipelines.segmentation import SegmentationOptions, SegmentationPipeline
from appliance.pipelines.style_transfer import StyleTransferPipeline
from appliance.pipelines.upscale import UpscalePipeline

__all__ = [
    "OPTIONS",
    "DepthOptions",
    "NoOptions",
    "Pipeline",
    "SegmentationOptions",
    "create_pipeline",
]

# The per-request options each capability's pipeline takes (known before any model loads: the OpenAPI document).
OPTIONS: dict[Capability, type[msgspec.Struct]] = {
    "upscale": UpscalePipeline.options_type,
    "segmentation": SegmentationPipeline.options_type,
    "depth": DepthPipeline.options_type,
    "style-transfer": StyleTransferPipeline.options_type,
}


def create_pipeline(manifest: Manifest, backend: Backend) -> Pipeline[Any, Any]:
    match manifest.processing:
        case UpscaleParams():
            return UpscalePipeline(manifest, backend)
        case SegmentationParams():
            return SegmentationPipeline(manifest, backend)
        case DepthParams():
            return DepthPipeline(manifest, backend)
        case StyleTransferParams():
            return StyleTransferPipeline(manifest, backend)
