"""The pipelines on the real models: shapes, value ranges, and that they compute what they claim."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from PIL import Image

from appliance.backends import create_backend
from appliance.catalog import load_catalog
from appliance.modelstore import ModelStore
from appliance.pipelines import DepthOptions, NoOptions, Pipeline, SegmentationOptions, create_pipeline
from appliance.pipelines.upscale import UpscalePipeline
from tests.helpers import GRACE_HOPPER, png_bytes


def _pipeline(name: str, model_dir: Path, catalog_dir: Path) -> Pipeline[Any, Any]:
    manifest = load_catalog(catalog_dir).get(name)
    backend = create_backend(ModelStore(model_dir).verified_path(manifest), intra_op_threads=2, allow_gpu=False).backend
    return create_pipeline(manifest, backend)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(GRACE_HOPPER).convert("RGB")


# upconv_7 is purely convolutional: tiles with its border of context reproduce one whole pass (to rounding).
# CUNet has squeeze-and-excitation blocks (a global average per tile), so tiles differ slightly by design.
@pytest.mark.parametrize(
    ("model", "max_error", "mean_error"), [("waifu2x-upconv7", 1, 0.01), ("waifu2x-cunet", 16, 0.8)]
)
def test_tiled_upscale_matches_whole_image(
    model: str, max_error: float, mean_error: float, model_dir: Path, catalog_dir: Path
) -> None:
    """Tiles meet without seams: the tiled result matches one pass over the whole image (8-bit levels)."""
    pipeline = _pipeline(model, model_dir, catalog_dir)
    assert isinstance(pipeline, UpscalePipeline)
    rgb = np.asarray(Image.open(io.BytesIO(png_bytes(75, 61))).convert("RGB"))
    whole = pipeline.upscale_pixels(rgb)
    pipeline.params = msgspec.structs.replace(pipeline.params, tile=24)
    tiled = pipeline.upscale_pixels(rgb)
    assert whole.shape == tiled.shape == (122, 150, 3) and whole.dtype == np.uint8
    error = np.abs(whole.astype(np.int16) - tiled.astype(np.int16))
    assert int(error.max()) <= max_error and float(error.mean()) <= mean_error, (error.max(), error.mean())


def test_upscale_keeps_alpha(model_dir: Path, catalog_dir: Path) -> None:
    pipeline = _pipeline("waifu2x-upconv7", model_dir, catalog_dir)
    image = Image.open(io.BytesIO(png_bytes(20, 10, mode="RGBA")))
    out = pipeline.process(image, NoOptions())
    assert out.mode == "RGBA" and out.size == (40, 20)


def test_segmentation_finds_the_person(model_dir: Path, catalog_dir: Path, photo: Image.Image) -> None:
    pipeline = _pipeline("u2netp", model_dir, catalog_dir)
    mask = pipeline.process(photo, SegmentationOptions())
    assert mask.mode == "L" and mask.size == photo.size
    values = np.asarray(mask, dtype=np.float32)
    centre = values[200:400, 156:356].mean()  # the face and uniform
    corners = np.concatenate([values[:60, :60].ravel(), values[:60, -60:].ravel()]).mean()
    assert centre > 128 > corners, (centre, corners)
    cutout = pipeline.process(photo, SegmentationOptions(cutout=True))
    assert cutout.mode == "RGBA" and np.array_equal(np.asarray(cutout)[..., 3], values.astype(np.uint8))


def test_depth_is_normalised_16_bit(model_dir: Path, catalog_dir: Path, photo: Image.Image) -> None:
    pipeline = _pipeline("ppocr-v4-det", model_dir, catalog_dir)
    assert pipeline.network_size(512, 600) == (448, 512)  # type: ignore[attr-defined]
    depth = pipeline.process(photo, DepthOptions())
    values = np.asarray(depth)
    assert depth.size == photo.size and values.dtype == np.uint16
    assert values.min() == 0 and values.max() == 65535
    coloured = pipeline.process(photo, DepthOptions(colormap=True))
    assert coloured.mode == "RGB" and coloured.size == photo.size


def test_depth_anything_sizes_are_patch_multiples(catalog_dir: Path) -> None:
    """Depth-Anything's pre-processing (from its manifest): longer side 518, both sides multiples of 14."""
    from appliance.pipelines.depth import DepthPipeline  # noqa: PLC0415

    manifest = load_catalog(catalog_dir).get("depth-anything-v2-small")
    pipeline = DepthPipeline(manifest, backend=None)  # type: ignore[arg-type]
    assert pipeline.network_size(1920, 1080) == (518, 294)
    assert pipeline.network_size(10, 10) == (518, 518)
    assert all(side % 14 == 0 for side in pipeline.network_size(640, 481))


def test_style_transfer_keeps_size(model_dir: Path, catalog_dir: Path, photo: Image.Image) -> None:
    pipeline = _pipeline("tiny-style", model_dir, catalog_dir)
    out = pipeline.process(photo, NoOptions())
    assert out.size == photo.size and out.mode == "RGB"
    assert np.asarray(out).std() > 1  # not a flat image
