"""Shared test helpers: images, go-livepeer's multipart encoding, the contract's schemas, node files."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import yaml
from PIL import Image

from appliance.atomic import sha256_file

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
    if isinstance(value, dict):  # an inline table
        return "{ " + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + " }"
    return str(value)


def write_style_manifest(catalog: Path, name: str, model_file: Path, *, description: str, size: int) -> None:
    """Write ``<catalog>/<name>.toml``: a style-transfer manifest whose ``file`` source is ``model_file`` (in
    ``catalog``), pinned to that file's sha256, with the fast-neural-style interface (``input1`` → ``output1``)."""
    (catalog / f"{name}.toml").write_text(
        f'''name = "{name}"
description = "{description}"
licence = "MIT"
file = "{model_file.name}"
sha256 = "{sha256_file(model_file)}"
[source]
kind = "file"
path = "{model_file.name}"
[[inputs]]
name = "input1"
[[outputs]]
name = "output1"
[processing]
capability = "style-transfer"
size = {size}
''',
        encoding="utf-8",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServedWorker:
    """A real ``lpa serve`` process on loopback (what systemd runs), its stdout and stderr together in ``log``."""

    def __init__(self, directory: Path, model_dir: Path, models: list[dict[str, Any]], **worker: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "worker.log"
        node = write_node(
            directory / "node.toml", model_dir=model_dir, models=models, listen=f"127.0.0.1:{self.port}", **worker
        )
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "appliance.cli", "serve", "--node", str(node)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def wait_ready(self, headers: dict[str, str] | None = None, timeout: float = 120) -> None:
        """Until ``/health`` answers something other than LOADING (polled: the only sign across processes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                response = httpx.get(f"{self.url}/health", headers=headers, timeout=5)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            assert response.status_code == 200, f"/health answered {response.status_code} (its token?)"
            status = response.json()["status"]
            if status != "LOADING":
                return
            time.sleep(0.05)
        raise AssertionError(f"the worker never became ready; its log:\n{self.log.read_text()}")

    def records(self) -> list[dict[str, Any]]:
        """Its JSON log lines so far (whole lines only: the process may be writing the last one)."""
        lines = self.log.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        """The first log record ``predicate`` accepts, once the worker has written it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((record for record in self.records() if predicate(record)), None)
            if found is not None:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no such log record within {timeout} s; the log:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
