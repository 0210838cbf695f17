"""A table of bad requests: each gets its documented status and message, and the worker keeps serving."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from litestar.testing import TestClient
from PIL import Image

from tests.helpers import assert_contract_response, golivepeer_multipart, png_bytes

UPSCALE = "/m/upscale/waifu2x-upconv7/upscale"
SEGMENT = "/m/segmentation/u2netp/segmentation"
DEPTH = "/m/depth/ppocr-v4-det/depth"
GOOD = png_bytes(16, 16)


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header (IHDR with a correct CRC) that declares a huge size: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = zlib.compress(b"\x00" * 1024)
    return header + struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))


def _jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(width, height))).save(out, format="JPEG")
    return out.getvalue()


def _flat_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(out, format="PNG")
    return out.getvalue()


@dataclass(frozen=True)
class Case:
    description: str
    route: str
    status: int
    message: str  # a fragment the answer's message must contain
    fields: dict[str, str] = field(default_factory=dict)
    image: bytes | None = GOOD
    raw: bytes | None = None  # a raw body instead of multipart
    content_type: str | None = None


UP = {"prompt": "x"}
CASES = [
    Case("no image part", UPSCALE, 422, "Field required", UP, image=None),
    Case("no prompt (required by the contract)", UPSCALE, 422, "Field required", {}),
    Case("empty image", UPSCALE, 400, "empty", UP, image=b""),
    Case("truncated PNG", UPSCALE, 400, "truncated", UP, image=png_bytes(64, 64)[:200]),
    Case("PNG cut inside its header", UPSCALE, 400, "truncated", UP, image=GOOD[:20]),
    Case("random bytes", UPSCALE, 400, "not a decodable image", UP, image=bytes(range(256)) * 4),
    Case("a text file", UPSCALE, 400, "not a decodable image", UP, image=b"#!/bin/sh\necho hello\n"),
    Case(
        "decompression bomb (PNG declaring 60000×60000)",
        UPSCALE,
        400,
        "worker's limit",
        UP,
        image=_png_claiming(60000, 60000),
    ),
    Case(
        "real image over the pixel limit",
        UPSCALE,
        400,
        "over this worker's limit",
        UP,
        image=_flat_png(1100, 1000),
    ),
    Case("truncated JPEG", UPSCALE, 400, "truncated", UP, image=_jpeg(64, 64)[:400]),
    Case(
        "body over the size limit (413 not in the contract → 400)",
        UPSCALE,
        400,
        "limit of 1000000 bytes",
        UP,
        image=b"\x00" * 1_100_000,
    ),
    Case("wrong model_id", UPSCALE, 400, "not served here", {**UP, "model_id": "stabilityai/other"}),
    Case("seed not an integer", UPSCALE, 422, "Expected `int", {**UP, "seed": "abc"}),
    Case("zero inference steps", UPSCALE, 422, ">= 1", {**UP, "num_inference_steps": "0"}),
    Case("safety_check not a bool", UPSCALE, 422, "Expected `bool`", {**UP, "safety_check": "maybe"}),
    Case(
        "JSON body instead of multipart",
        UPSCALE,
        422,
        "expected multipart/form-data",
        raw=b'{"prompt":"x"}',
        content_type="application/json",
    ),
    Case(
        "multipart without a boundary",
        UPSCALE,
        400,
        "boundary",
        raw=b"--x\r\n",
        content_type="multipart/form-data",
    ),
    Case("segmentation: wrong model_id", SEGMENT, 400, "not served here", {"model_id": "u2net-big"}),
    Case("segmentation: cutout not a bool", SEGMENT, 422, "Expected `bool`", {"cutout": "perhaps"}),
    Case("segmentation: unknown option", SEGMENT, 422, "unknown field", {"strength": "0.800000"}),
    Case("segmentation: text/plain body", SEGMENT, 415, "not accepted", raw=b"hello", content_type="text/plain"),
    Case(
        "segmentation: raw body that is not an image",
        SEGMENT,
        400,
        "not a decodable image",
        raw=b"GIF89a??",
        content_type="image/gif",
    ),
    Case(
        "depth: body over the size limit",
        DEPTH,
        413,
        "limit of 1000000 bytes",
        raw=b"\x00" * 1_100_000,
        content_type="image/png",
    ),
    Case("depth: raw empty body", DEPTH, 400, "empty", raw=b"", content_type="image/png"),
    Case("depth: colormap not a bool", DEPTH, 422, "Expected `bool`", {"colormap": "rainbow"}),
]


def _send(client: TestClient[Any], case: Case) -> Any:
    if case.raw is not None:
        headers = {"Content-Type": case.content_type} if case.content_type else {}
        return client.post(case.route, content=case.raw, headers=headers)
    if case.image is None:
        body, content_type = _multipart_without_file(case.fields)
    else:
        body, content_type = golivepeer_multipart(case.fields, "image", case.image)
    return client.post(case.route, content=body, headers={"Content-Type": content_type})


def _multipart_without_file(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "lpatestboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return (("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}")


def test_table_has_at_least_twenty_kinds() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.description for c in CASES])
def test_bad_input_gets_clear_error_and_worker_keeps_serving(shared_client: TestClient[Any], case: Case) -> None:
    response = _send(shared_client, case)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if case.status == 422:
        assert isinstance(body["detail"], list) and body["detail"][0]["loc"][0] == "body"
        message = body["detail"][0]["msg"]
    else:
        message = body["detail"]["msg"]
    assert case.message in message, message
    if case.route == UPSCALE:
        assert_contract_response("/upscale", "post", response.status_code, response.headers["content-type"], body)

    # The next good request on the same route succeeds.
    good = _send(shared_client, Case("good", case.route, 200, "", {"prompt": "x"} if case.route == UPSCALE else {}))
    assert good.status_code == 200, good.text
    assert shared_client.get("/health").json() == {"status": "OK"}


def test_non_utf8_text_part_is_a_400_and_not_logged(
    shared_client: TestClient[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """An image sent as a text part (no filename) with binary bytes: a clear 400, and the bytes stay out of logs."""
    boundary = "lpatestboundary"
    secret_bytes = b"\x89PNG\xff\xfe-payload-marker-" + bytes(range(128, 256))
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n\r\n'.encode()
        + secret_bytes
        + f"\r\n--{boundary}--\r\n".encode()
    )
    capsys.readouterr()
    response = shared_client.post(
        UPSCALE, content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 400
    assert "not UTF-8" in response.json()["detail"]["msg"]
    assert "payload-marker" not in "".join(capsys.readouterr())
