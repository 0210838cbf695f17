"""Decoding uploads: the modes and formats real clients send, turned into RGB/RGBA as they are displayed."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from appliance.imaging import ImageError, decode_image
from tests.helpers import GRACE_HOPPER


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize(
    ("description", "image", "fmt", "mode"),
    [
        ("greyscale PNG", Image.new("L", (8, 6), 128), "PNG", "RGB"),
        ("16-bit greyscale PNG", Image.new("I;16", (8, 6), 40000), "PNG", "RGB"),
        ("palette GIF", Image.new("P", (8, 6), 3), "GIF", "RGB"),
        ("RGBA PNG keeps its alpha", Image.new("RGBA", (8, 6), (1, 2, 3, 4)), "PNG", "RGBA"),
        ("CMYK JPEG", Image.new("CMYK", (8, 6), (0, 50, 100, 0)), "JPEG", "RGB"),
        ("WebP", Image.new("RGB", (8, 6), (9, 9, 9)), "WEBP", "RGB"),
        ("BMP", Image.new("RGB", (8, 6), (9, 9, 9)), "BMP", "RGB"),
    ],
)
def test_modes_become_rgb_or_rgba(description: str, image: Image.Image, fmt: str, mode: str) -> None:
    decoded = decode_image(_encode(image, fmt), max_pixels=1000)
    assert decoded.mode == mode and decoded.size == (8, 6)


@pytest.mark.parametrize(
    ("description", "image", "expected"),
    [
        ("16-bit grey is scaled, not clipped", Image.fromarray(np.full((4, 4), 32896, np.uint16)), 128),
        ("8-bit values in a 32-bit image stay", Image.new("I", (4, 4), 100), 100),
        ("float 0..1 is scaled", Image.fromarray(np.full((4, 4), 0.5, np.float32)), 128),
    ],
)
def test_high_bit_depth_keeps_its_tones(description: str, image: Image.Image, expected: int) -> None:
    decoded = decode_image(_encode(image, "TIFF"), max_pixels=1000)
    assert decoded.mode == "RGB" and decoded.getpixel((1, 1)) == (expected, expected, expected)


def test_lab_has_no_alpha() -> None:
    decoded = decode_image(_encode(Image.new("LAB", (4, 4), (50, 128, 128)), "TIFF"), max_pixels=1000)
    assert decoded.mode == "RGB"


def test_exif_orientation_is_applied() -> None:
    """A phone's portrait photo stored as landscape pixels + EXIF orientation 6 (rotate 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.new("RGB", (40, 20), (200, 10, 10)), "JPEG", exif=exif)
    assert decode_image(data, max_pixels=10_000).size == (20, 40)


def test_unsupported_format_is_refused_before_parsing() -> None:
    data = _encode(Image.new("RGB", (8, 6)), "PPM")
    with pytest.raises(ImageError, match="not a decodable image"):
        decode_image(data, max_pixels=1000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"])
def test_mutated_images_decode_or_fail_cleanly(fmt: str) -> None:
    """Seeded byte flips, cuts and splices of real encodings: every outcome is an image or an ImageError."""
    rng = random.Random(fmt)
    photo = Image.open(GRACE_HOPPER).convert("RGB").resize((64, 75))
    original = _encode(photo if fmt != "GIF" else photo.convert("P"), fmt)
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            match rng.randrange(3):
                case 0:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                case 1:
                    del data[rng.randrange(len(data)) :]
                case _:
                    at = rng.randrange(len(data))
                    data[at:at] = rng.randbytes(rng.randint(1, 32))
            if not data:
                data = bytearray(b"\x00")
        try:
            image = decode_image(bytes(data), max_pixels=1 << 20)
        except ImageError:
            outcomes["refused"] += 1
        else:
            assert image.mode in ("RGB", "RGBA")
            outcomes["decoded"] += 1
    assert outcomes["refused"] > 0, outcomes
