"""Shared test helpers: images, go-livepeer's multipart encoding, the contract's schemas, node files."""

from __future__ import annotations

import io
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CONTRACT = REPO / "tests" / "contract" / "ai-runner-openapi.yaml"
GRACE_HOPPER = REPO / "tests" / "data" / "grace_hopper.jpg"


def png_bytes(width: int, height: int, *, mode: str = "RGB", seed: int = 0) -> bytes:
    """A deterministic test image: a gradient with seeded noise, so models see structure, not a flat field."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width, 1), y * 255 / max(height, 1), (x + y) * 127 / max(width + height, 1)], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def golivepeer_multipart(fields: dict[str, str], file_field: str, data: bytes) -> tuple[bytes, str]:
    """Encode a request the way go-livepeer's generated client does (Go's mime/multipart).

    Text fields come first as bare parts; the file part is created with CreateFormFile, which labels it
    ``application/octet-stream`` whatever the image's real type; floats arrive pre-formatted with %f.
    Returns (body, content type).
    """
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    chunks.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{file_field}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


@cache
def contract() -> dict[str, Any]:
    with CONTRACT.open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = yaml.safe_load(handle)
    return loaded


def contract_schema(name: str) -> dict[str, Any]:
    """A schema of the contract, with its ``$ref``s resolvable."""
    return {"$ref": f"#/components/schemas/{name}", "components": contract()["components"]}


def assert_contract_response(path: str, method: str, status: int, content_type: str, body: Any) -> None:
    """The answer is one the contract lists for this route: status, JSON content type and body schema."""
    operation = contract()["paths"][path][method]
    responses = operation["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, contract lists {list(responses)}"
    assert content_type.split(";", maxsplit=1)[0] == "application/json", f"content type {content_type!r} is not JSON"
    schema_ref = responses[str(status)]["content"]["application/json"]["schema"]
    schema = {**schema_ref, "components": contract()["components"]}
    jsonschema.validate(body, schema)


def write_node(
    path: Path,
    *,
    model_dir: Path,
    models: list[dict[str, Any]],
    catalog_dir: Path | None = None,
    **worker: Any,
) -> Path:
    """Write a node file (TOML) for tests."""
    lines = ["[worker]", f'model_dir = "{model_dir}"']
    if catalog_dir is not None:
        lines.append(f'catalog_dir = "{catalog_dir}"')
    lines += [f"{key} = {_toml(value)}" for key, value in worker.items()]
    for model in models:
        lines += ["", "[[models]]", *(f"{key} = {_toml(value)}" for key, value in model.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
