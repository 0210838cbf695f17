"""Decoding uploads: the modes and formats real clients send, turned into RGB/RGBA as they are displayed; and the
image zoo through the worker, each a correct answer or a clear 400."""

from __future__ import annotations

import base64
import io
import random
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient
from PIL import Image

from appliance.imaging import ImageError, decode_image
from tests.helpers import GRACE_HOPPER, golivepeer_multipart


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


# --- the zoo through the worker: a correct answer (200, the right size) or a clear 400 -------------------------
# Truncated PNG and JPEG and a PNG declaring 60000×60000 are rows of test_bad_inputs.py's table (400 each).


def _png_16bit_rgb(width: int, height: int) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow writes none): IHDR bit depth 16, colour type 2, rows of big-endian."""
    rows = np.linspace(0, 65535, width * height * 3).astype(">u2").reshape(height, width * 3)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) declares ``width`` × ``height``."""
    data = bytearray(_encode(Image.new("RGB", (8, 8), (10, 20, 30)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _gif_claiming(width: int, height: int) -> bytes:
    """A real GIF whose screen and image descriptors declare ``width`` × ``height``."""
    data = bytearray(_encode(Image.new("P", (8, 8), 1), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    image = data.index(b"\x2c", 13)
    data[image + 5 : image + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (20, 10), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    image.paste(1, (10, 0, 20, 10))
    return _encode(image, "PNG", transparency=0)


def _animated_gif() -> bytes:
    first, second = Image.new("RGB", (20, 10), (250, 0, 0)), Image.new("RGB", (20, 10), (0, 0, 250))
    return _encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display: 40×20 stored, 20×40 shown
    return _encode(Image.new("RGB", (40, 20), (200, 10, 10)), "JPEG", exif=exif)


ZOO_UPSCALE = "/m/upscale/waifu2x-upconv7/upscale"
ZOO_SEGMENT = "/m/segmentation/u2netp/segmentation"
ZOO_DEPTH = "/m/depth/ppocr-v4-det/depth"
ZOO = [  # (description, image, route, expected: the answer's (width, height, mode), or a 400's message fragment)
    ("1×1 PNG", _encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"), ZOO_UPSCALE, (2, 2, "RGB")),
    ("1×1 JPEG", _encode(Image.new("RGB", (1, 1), (9, 99, 199)), "JPEG"), ZOO_UPSCALE, (2, 2, "RGB")),
    ("1×1 PNG, depth", _encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"), ZOO_DEPTH, (1, 1, "I;16")),
    ("JPEG declaring 50000×50000", _jpeg_claiming(50000, 50000), ZOO_UPSCALE, "worker's limit"),
    ("GIF declaring 50000×50000", _gif_claiming(50000, 50000), ZOO_UPSCALE, "worker's limit"),
    ("CMYK JPEG", _encode(Image.new("CMYK", (24, 16), (0, 50, 100, 0)), "JPEG"), ZOO_UPSCALE, (48, 32, "RGB")),
    ("16-bit greyscale PNG", _encode(Image.new("I;16", (24, 16), 40000), "PNG"), ZOO_UPSCALE, (48, 32, "RGB")),
    ("16-bit RGB PNG", _png_16bit_rgb(24, 16), ZOO_UPSCALE, (48, 32, "RGB")),
    ("palette PNG with transparency keeps it", _palette_with_transparency(), ZOO_UPSCALE, (40, 20, "RGBA")),
    ("animated GIF: its first frame", _animated_gif(), ZOO_UPSCALE, (40, 20, "RGB")),
    ("EXIF-rotated JPEG, as displayed", _exif_rotated(), ZOO_UPSCALE, (40, 80, "RGB")),
    ("EXIF-rotated JPEG, segmentation mask", _exif_rotated(), ZOO_SEGMENT, (20, 40, "L")),
    ("greyscale PNG", _encode(Image.new("L", (24, 16), 128), "PNG"), ZOO_UPSCALE, (48, 32, "RGB")),
    ("greyscale JPEG", _encode(Image.new("L", (24, 16), 128), "JPEG"), ZOO_UPSCALE, (48, 32, "RGB")),
    ("greyscale with alpha PNG", _encode(Image.new("LA", (24, 16), (128, 64)), "PNG"), ZOO_UPSCALE, (48, 32, "RGBA")),
]


@pytest.mark.parametrize(("description", "image", "route", "expected"), ZOO, ids=[z[0] for z in ZOO])
def test_image_zoo_through_the_worker(
    shared_client: TestClient[Any], description: str, image: bytes, route: str, expected: tuple[int, int, str] | str
) -> None:
    body, content_type = golivepeer_multipart({"prompt": ""} if route == ZOO_UPSCALE else {}, "image", image)
    response = shared_client.post(route, content=body, headers={"Content-Type": content_type})
    assert response.headers["content-type"] == "application/json"
    if isinstance(expected, str):
        assert response.status_code == 400, response.text
        assert expected in response.json()["detail"]["msg"]
        return
    assert response.status_code == 200, response.text
    url = response.json()["images"][0]["url"]
    answer = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert (*answer.size, answer.mode) == expected
    if description.startswith("animated GIF"):
        red, _, blue = np.asarray(answer, dtype=np.float64).mean(axis=(0, 1))
        assert red > 200 and blue < 50, "not the first frame"
