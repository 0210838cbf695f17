"""A double of go-livepeer's orchestrator (go-livepeer's binary cannot be built on these machines).

It does what go-livepeer v0.9.1 does with an external runner, as LIVEPEER.md records it from the source:
- reads ``aiModels.json`` the way go-livepeer does: a top-level array, prices parsed as exact rationals from the
  raw JSON token (a quoted price fails, as ``big.Rat.SetString`` on the raw token fails there), a pipeline
  outside the fixed list or a model both warm and cold is a start-up panic;
- performs the start-up handshake per entry: ``GET <url>/health`` every 500 ms with the bearer token until the
  status is not ``ERROR`` (``ERROR`` fails at once), then ``/hardware/info`` and ``/version``;
- sends requests as the generated Go client does (text parts, then the file part as ``application/octet-stream``,
  ``%f`` floats), at most ``capacity`` at once per entry, and raises :class:`GoLivepeerPanic` on any answer the
  client cannot decode (a status outside the route's list, or a non-JSON content type);
- accepts BYOC registrations (``POST /capability/register`` with the raw orchSecret) and forwards jobs to the
  registered runner with its bearer token, dropping the capability on a connection error or a 401.

Where it departs from go-livepeer: a BYOC job names its capability with the header ``X-Double-Capability``
(the gateway's own job header is out of scope), and nothing is paid.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

# Restated from LIVEPEER.md on purpose, not imported from the appliance: a double that shared the code under
# test could not catch its mistakes.
PIPELINES = frozenset(
    {
        "text-to-image",
        "image-to-image",
        "image-to-video",
        "upscale",
        "audio-to-text",
        "segment-anything-2",
        "llm",
        "image-to-text",
        "text-to-speech",
        "live-video-to-video",
    }
)
DECODED_STATUSES = {"upscale": {200, 400, 401, 422, 500}}  # what the generated client decodes per route


class GoLivepeerPanic(AssertionError):
    """Where go-livepeer would panic, refuse to start, or mishandle the runner's answer."""


@dataclass
class AIModelConfig:
    pipeline: str
    model_id: str
    url: str
    token: str
    warm: bool
    capacity: int
    gateway: str
    price_per_unit: Fraction | None
    pixels_per_unit: Fraction | None
    currency: str
    version_ok: bool = False


def _rational(raw: Any, field: str) -> Fraction | None:
    if raw is None:
        return None
    if not isinstance(raw, Decimal | int):
        raise GoLivepeerPanic(f"{field}: big.Rat.SetString fails on the raw token {json.dumps(raw)}")
    return Fraction(raw)


def load_ai_models(path: Path) -> list[AIModelConfig]:
    try:
        raw = json.loads(path.read_text(), parse_float=Decimal)
    except (ValueError, InvalidOperation) as exc:
        raise GoLivepeerPanic(f"{path}: not JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise GoLivepeerPanic(f"{path}: go-livepeer expects a top-level array")
    entries, warmth = [], {}
    for item in raw:
        pipeline = item.get("pipeline", "")
        if pipeline not in PIPELINES:
            raise GoLivepeerPanic(f"unknown pipeline {pipeline!r}")
        url = item.get("url", "")
        if url and "://" not in url:
            raise GoLivepeerPanic(f"url {url!r} has no scheme")
        pixels = _rational(item.get("pixels_per_unit"), "pixels_per_unit")
        if pixels is not None and (pixels.denominator != 1 or pixels <= 0):
            raise GoLivepeerPanic(f"pixels_per_unit {pixels} is not a positive integer")
        entry = AIModelConfig(
            pipeline=pipeline,
            model_id=item["model_id"],
            url=url,
            token=item.get("token", ""),
            warm=bool(item.get("warm", False)),
            capacity=int(item.get("capacity") or 1),
            gateway=item.get("gateway", ""),
            price_per_unit=_rational(item.get("price_per_unit"), "price_per_unit"),
            pixels_per_unit=pixels,
            currency=item.get("currency", ""),
        )
        if warmth.setdefault(entry.model_id, entry.warm) != entry.warm:
            raise GoLivepeerPanic(f"model_id {entry.model_id!r} is both warm and cold")
        entries.append(entry)
    return entries


def _json_answer(response: httpx.Response, route: str, allowed: set[int]) -> Any:
    if response.status_code not in allowed:
        raise GoLivepeerPanic(f"{route} answered {response.status_code}, which the client does not decode")
    if not response.headers.get("content-type", "").startswith("application/json"):
        raise GoLivepeerPanic(f"{route} answered {response.headers.get('content-type')!r}, not JSON")
    return response.json()


def _headers(entry: AIModelConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {entry.token}"} if entry.token else {}


def handshake(entry: AIModelConfig, *, timeout_s: float = 120.0) -> None:
    """go-livepeer's start-up check of an external runner; raises GoLivepeerPanic where the node would not start."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0, headers=_headers(entry)) as client:
        while True:
            try:
                status = _json_answer(client.get(f"{entry.url}/health"), "/health", {200})["status"]
                if status == "ERROR":
                    raise GoLivepeerPanic(f"{entry.model_id}: runner reports ERROR")
                break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise GoLivepeerPanic(f"{entry.model_id}: runner not ready in {timeout_s} s")
            time.sleep(0.5)
        _json_answer(client.get(f"{entry.url}/hardware/info"), "/hardware/info", {200})
        version = _json_answer(client.get(f"{entry.url}/version"), "/version", {200})
        entry.version_ok = (version.get("pipeline"), version.get("model_id")) == (entry.pipeline, entry.model_id)


def go_multipart(fields: dict[str, str], file_field: str, data: bytes) -> tuple[bytes, str]:
    """Go's mime/multipart as the generated client writes it: text parts, then CreateFormFile's octet-stream."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{file_field}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Orchestrator:
    """The orchestrator's side: its entries, their slots, and the BYOC registry served over HTTP."""

    def __init__(self, entries: list[AIModelConfig], *, orch_secret: str) -> None:
        self.entries = entries
        self.orch_secret = orch_secret
        self.registrations: dict[str, dict[str, Any]] = {}
        self.unregistered: list[str] = []
        self._in_use: dict[int, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def serve(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def upscale(
        self, entry: AIModelConfig, image: bytes, *, respect_capacity: bool = True, seed: int | None = None
    ) -> tuple[int, Any]:
        """One upscale job; beyond ``capacity`` in flight the orchestrator itself answers busy (as go-livepeer)."""
        with self._lock:
            if respect_capacity and self._in_use.get(id(entry), 0) >= entry.capacity:
                return 500, {"detail": {"msg": "insufficient capacity (orchestrator)"}}
            self._in_use[id(entry)] = self._in_use.get(id(entry), 0) + 1
        try:
            fields = {"prompt": "", "model_id": entry.model_id, "safety_check": "true"}
            if seed is not None:
                fields["seed"] = str(seed)
            body, content_type = go_multipart(fields, "image", image)
            response = httpx.post(
                f"{entry.url}/upscale",
                content=body,
                timeout=300,
                headers={**_headers(entry), "Content-Type": content_type},
            )
            return response.status_code, _json_answer(response, "/upscale", DECODED_STATUSES["upscale"])
        finally:
            with self._lock:
                self._in_use[id(entry)] -= 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        orchestrator = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(
                self, status: int, body: bytes, content_type: str = "text/plain", extra: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/capability/"):
                    if self.headers.get("Authorization") != orchestrator.orch_secret:
                        self._reply(401, b"invalid secret")
                        return
                    if self.path == "/capability/register":
                        registration = json.loads(body)
                        orchestrator.registrations[registration["name"]] = registration
                    elif self.path == "/capability/unregister":
                        name = body.decode()
                        orchestrator.registrations.pop(name, None)
                        orchestrator.unregistered.append(name)
                    self._reply(200, b"ok")
                    return
                if self.path.startswith("/process/request/"):
                    self._forward(self.path.removeprefix("/process/request/"), body)
                    return
                self._reply(404, b"not found")

            def _forward(self, subpath: str, body: bytes) -> None:
                name = self.headers.get("X-Double-Capability", "")
                registration = orchestrator.registrations.get(name)
                if registration is None:
                    self._reply(503, b"capability not registered")
                    return
                headers = {"Content-Type": self.headers.get("Content-Type", "application/octet-stream")}
                if registration.get("token"):
                    headers["Authorization"] = f"Bearer {registration['token']}"
                if self.headers.get("Accept"):
                    headers["Accept"] = self.headers["Accept"]
                try:
                    answer = httpx.post(f"{registration['url']}/{subpath}", content=body, headers=headers, timeout=300)
                except httpx.TransportError:
                    orchestrator.registrations.pop(name, None)  # go-livepeer drops the capability
                    self._reply(502, b"runner unreachable")
                    return
                if answer.status_code == 401:
                    orchestrator.registrations.pop(name, None)
                passed = {k: v for k, v in answer.headers.items() if k.lower() == "x-metadata"}
                self._reply(answer.status_code, answer.content, answer.headers.get("content-type", ""), passed)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
