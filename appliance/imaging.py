"""Decoding uploads into pixels, safely, and encoding results as PNG.

Decoding reads only the header first, so an image whose declared size is over the limit (a decompression
bomb) is refused before a single pixel is allocated.
"""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "data_url", "decode_image", "encode_png", "resize_array"]

# Formats an uploaded image may be in; anything else (PSD, EPS, ...) is refused before parsing.
_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")  # JPEG covers cameras' MPO files too


class ImageError(ValueError):
    """The upload is not an image the worker will process. The message is safe to return to the client."""


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode ``data`` into an RGB (or RGBA) image of at most ``max_pixels`` pixels; raises ImageError."""
    if not data:
        raise ImageError("the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=_FORMATS)
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageError(f"the image has no pixels ({width}×{height})")
            if width * height > max_pixels:
                raise ImageError(
                    f"the image is {width}×{height} = {width * height} pixels, over this worker's limit "
                    f"of {max_pixels} pixels"
                )
            image.load()
            # A phone photo's pixels may be stored sideways with an EXIF note: use the image as it is shown.
            image = _as_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"the upload is not a decodable image (accepted: {', '.join(_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard fired while reading the header: far past any sane limit, ours included.
        raise ImageError(
            f"the image declares more pixels than this worker's limit of {max_pixels} pixels (a decompression bomb?)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt pixel data
        raise ImageError(f"the image is corrupt or truncated: {exc}") from None
    except Exception as exc:  # Pillow's parsers raise many kinds (KeyError, struct.error, ...) on hostile bytes
        raise ImageError(f"the image could not be decoded ({type(exc).__name__}: {exc})") from None
    return image


_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _as_rgb(image: Image.Image) -> Image.Image:
    """Any mode → RGB, or RGBA where the image has transparency; high bit depths scaled, not clipped."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit integer or float grey
        values = np.asarray(image, dtype=np.float64)
        peak = float(values.max(initial=0.0))
        if image.mode == "F":
            full_scale = 1.0 if peak <= 1.0 else 255.0
        else:
            full_scale = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
        grey = np.rint(np.clip(values * (255.0 / full_scale), 0, 255)).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def encode_png(image: Image.Image) -> bytes:
    """PNG with light compression: these images go straight back over loopback, speed beats size."""
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def resize_array(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a 2-D float32 array (a mask or a depth map) to width × height."""
    resized = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)
