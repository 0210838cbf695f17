"""Reading an upload (multipart as go-livepeer sends it, or a raw ``image/*`` body) into bytes and fields.

Text fields are decoded into the route's msgspec Struct with string coercion (go-livepeer writes floats as
``0.800000`` and bools as ``true``); a missing or malformed field is a 422 naming it, in FastAPI's shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile

from appliance.server.errors import BadRequest, UnsupportedMediaType, ValidationFailed

__all__ = ["Upload", "decode_fields", "read_upload"]

T = TypeVar("T", bound=msgspec.Struct)

_PATH = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


@dataclass(frozen=True)
class Upload:
    image: bytes
    fields: dict[str, str]


async def read_upload(request: Request[Any, Any, Any], *, file_field: str, allow_raw: bool) -> Upload:
    """The uploaded image and the text fields beside it; raises a RunnerError subclass on a bad request."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        try:
            form = await request.form()
        except UnicodeDecodeError:  # Litestar decodes every part without a filename as text
            raise BadRequest(
                f"a text part of the form is not UTF-8; send {file_field!r} as a file part (with a filename)"
            ) from None
        # Options may also come as query parameters (as with a raw body); form fields win.
        fields: dict[str, str] = dict(request.query_params) if allow_raw else {}
        image: bytes | None = None
        for key, value in form.multi_items():
            if key == file_field:
                image = await value.read() if isinstance(value, UploadFile) else str(value).encode()
            elif isinstance(value, str):
                fields[key] = value
            else:
                raise ValidationFailed(["body", key], f"field {key!r} must be text, not a file", "value_error")
        if image is None:
            raise ValidationFailed(["body", file_field], "Field required", "missing")
        return Upload(image=image, fields=fields)
    if allow_raw and (media_type.startswith("image/") or media_type == "application/octet-stream"):
        return Upload(image=await request.body(), fields=dict(request.query_params))
    accepted = "multipart/form-data" + (" or a raw image/* body" if allow_raw else "")
    if allow_raw:
        raise UnsupportedMediaType(f"content type {media_type or 'none'!r} is not accepted; send {accepted}")
    raise ValidationFailed(["body"], f"expected {accepted}, got {media_type or 'no content type'}", "value_error")


def decode_fields(fields: dict[str, str], type_: type[T]) -> T:
    """Decode text fields into ``type_``; raises ValidationFailed naming the field."""
    try:
        return msgspec.convert(fields, type_, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if found := _MISSING.search(text):
            raise ValidationFailed(["body", found.group(1)], "Field required", "missing") from None
        if found := _UNKNOWN.search(text):
            raise ValidationFailed(["body", found.group(1)], "unknown field", "extra_forbidden") from None
        found = _PATH.search(text)
        loc: list[str | int] = ["body", found.group(1)] if found else ["body"]
        raise ValidationFailed(loc, text.split(" - at ", maxsplit=1)[0], "value_error") from None
