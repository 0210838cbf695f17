"""A double of go-livepeer (go-livepeer's binary cannot be built on these machines). Not go-livepeer.

Python standard library only: the same file is the ``livepeer`` executable of the release tarball that
``tests/doubles/release.py`` builds (a node's bare Debian ``python3`` runs it), and the library the tests import.

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

As a command (``python3 orchestrator.py -config FILE ...``, or the tarball's ``livepeer``) it starts like
go-livepeer's ``livepeer``: Go ``flag`` syntax (``-name value``, ``-name=value``, ``--name``, bare booleans), the
flag names of go-livepeer's ``starter/flags.go`` with their Go types, ``-config FILE`` read as go-livepeer reads it
(ff v3's plain parser), ``LP_<FLAG>`` environment variables; precedence command line > environment > file.
Then the start-up go-livepeer does for ``-orchestrator`` and/or ``-aiWorker``, logging glog-like lines to stderr,
and it serves until SIGTERM/SIGINT: ``GET /status`` (the handshake results, the flags in effect with secrets
masked) and, with ``-monitor``, ``GET /metrics`` on ``-cliAddr``; BYOC registration and an ``/upscale`` forwarder
on the orchestrator's port.

Exit statuses are go-livepeer's (read from ``cmd/livepeer/livepeer.go`` and ``cmd/livepeer/starter``):
- 2: a bad command line (Go's ``flag`` package, message and usage on stdout); a start-up panic (unknown
  pipeline, a model both warm and cold, a zero price on chain); "No services enabled";
- 1: ``glog.Exit``: a bad ``-config`` file or ``LP_`` variable ("Error parsing config: ..."), a remote worker
  without ``-orchSecret`` or ``-orchAddr``, an orchestrator with neither ``-orchSecret`` nor ``-aiModels``,
  on-chain without ``-ethUrl``;
- 0: SIGTERM/SIGINT, ``-version``, ``-help``, and every start-up error go-livepeer only logs before
  ``StartLivepeer`` returns: "Error parsing -aiModels", "Error AI worker warming <pipeline> container" (a runner
  that answers ``ERROR`` or is not ready in 2 minutes), "Error starting AI worker" (no Docker daemon), "Error
  unmarshaling image overrides". The node does not start and the process exits 0 (``main`` waits on the
  returned goroutine), so only ``Restart=always`` restarts it under systemd.

Where it departs from go-livepeer:
- a BYOC job names its capability with the header ``X-Double-Capability`` (the gateway's own job header is out of
  scope), and nothing is paid: no tickets, no payment headers, no chain (``-ethUrl`` is only required, never
  dialled);
- the orchestrator's port (``-httpAddr``, by default all interfaces on ``-serviceAddr``'s port) speaks plain HTTP;
  go-livepeer serves TLS there with a self-signed certificate (and gRPC for remote workers). It serves only
  ``/capability/register``, ``/capability/unregister``, ``/process/request/<path>`` (BYOC) and ``POST /upscale``
  (multipart ``image`` + ``model_id`` [+ ``seed``], forwarded to the entry without payment);
- without ``-serviceAddr`` go-livepeer looks up the host's public IP at api.ipify.org (and exits 1 when it
  cannot); the double logs that and serves no orchestrator port unless ``-httpAddr`` is set. The start-up
  availability check is a TCP connect to ``-serviceAddr`` right away, not go-livepeer's gRPC call 2 s later;
- Docker: go-livepeer's ``-aiWorker`` lists containers at start and stops without a daemon. The double only looks
  for the socket (``DOCKER_HOST=unix://...`` or ``/var/run/docker.sock``); when it is missing it logs that
  go-livepeer would stop there and goes on, unless ``LIVEPEER_DOUBLE_REQUIRE_DOCKER=1`` (then it stops as
  go-livepeer does). Runner images are never checked or pulled, and entries without ``url`` (managed containers)
  are skipped with a log line;
- ``-aiModels`` is validated whole before the first handshake (go-livepeer checks entry by entry, after each
  handshake); ``LIVEPEER_DOUBLE_RUNNER_TIMEOUT_S`` shortens the 2-minute handshake limit (tests);
- a remote worker (``-aiWorker -orchAddr``) logs that it would connect to the orchestrator and does not;
- it plays only ``-orchestrator`` and ``-aiWorker`` nodes: ``-transcoder``, ``-gateway``, ``-broadcaster``,
  ``-redeemer``, ``-reward`` and ``-initializeRound`` nodes are refused (exit 2);
- ``/status`` and ``/metrics`` have the double's own content, not go-livepeer's; flags go-livepeer has but the
  double does not act on are accepted, validated by type and ignored; ``-version`` prints go-livepeer's lines
  without the config table.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import http.client
import json
import os
import platform
import re
import signal
import socket
import stat
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

try:  # a bare python3 has it; python3-minimal does not (then the data directory gets an empty file)
    import sqlite3
except ImportError:  # pragma: no cover
    sqlite3 = None  # type: ignore[assignment]

DOUBLE_VERSION = "0.9.1"  # the go-livepeer release this double stands in for (printed by -version)

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


class NotStarted(GoLivepeerPanic):
    """go-livepeer logs this error and ``StartLivepeer`` returns: the node does not start (the process exits 0)."""


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
    # Filled by the handshake: the last /health status, /version's version, /hardware/info's body.
    health: str = ""
    runner_version: str = ""
    hardware: Any = None


def _rational(raw: Any, field: str) -> Fraction | None:
    if raw is None:
        return None
    if not isinstance(raw, Decimal | int):
        raise NotStarted(f"{field}: big.Rat.SetString fails on the raw token {json.dumps(raw)}")
    return Fraction(raw)


def load_ai_models(path: Path) -> list[AIModelConfig]:
    """``-aiModels FILE`` as go-livepeer reads it. NotStarted: "Error parsing -aiModels"; GoLivepeerPanic: a panic."""
    try:
        raw = json.loads(path.read_text(), parse_float=Decimal)
    except (ValueError, InvalidOperation) as exc:
        raise NotStarted(f"{path}: not JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise NotStarted(f"{path}: go-livepeer expects a top-level array")
    entries, warmth = [], {}
    for item in raw:
        pipeline = item.get("pipeline", "")
        if pipeline not in PIPELINES:
            raise GoLivepeerPanic(f"Pipeline is not valid capability: {pipeline} (unknown pipeline {pipeline!r})")
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
            raise GoLivepeerPanic(
                f"Cannot have same model_id ({entry.model_id}) as cold and warm in same AI worker, please fix "
                f"aiModels json config (model_id {entry.model_id!r} is both warm and cold)"
            )
        entries.append(entry)
    return entries


# --- HTTP, with http.client only -------------------------------------------------------------------------------

TRANSPORT_ERRORS = (OSError, http.client.HTTPException)  # refused, reset, timed out, not HTTP


@dataclass
class Answer:
    """An HTTP answer: status, headers (lower-case names) and body."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


def http_request(
    method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> Answer:
    """One request on its own connection; raises one of TRANSPORT_ERRORS when no HTTP answer comes."""
    parts = urllib.parse.urlsplit(url)
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.hostname or "", parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def _json_answer(response: Answer, route: str, allowed: set[int]) -> Any:
    if response.status_code not in allowed:
        raise GoLivepeerPanic(f"{route} answered {response.status_code}, which the client does not decode")
    if not response.headers.get("content-type", "").startswith("application/json"):
        raise GoLivepeerPanic(f"{route} answered {response.headers.get('content-type')!r}, not JSON")
    try:
        return response.json()
    except ValueError as exc:
        raise GoLivepeerPanic(f"{route} answered a body that is not JSON: {exc}") from exc


def _headers(entry: AIModelConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {entry.token}"} if entry.token else {}


def handshake(entry: AIModelConfig, *, timeout_s: float = 120.0, log: Callable[[str], None] | None = None) -> None:
    """go-livepeer's start-up check of an external runner.

    Raises NotStarted where go-livepeer logs "Error AI worker warming" and does not start (``ERROR``, not ready in
    ``timeout_s``), GoLivepeerPanic where its client cannot decode the answer. ``log`` gets one line per step.
    """
    say = log or (lambda _: None)
    deadline = time.monotonic() + timeout_s
    headers = _headers(entry)
    say(f"Waiting for runner pipeline={entry.pipeline} model_id={entry.model_id} url={entry.url}/health")
    last_status = None
    while True:
        try:
            answer = http_request("GET", f"{entry.url}/health", headers=headers)
            status = _json_answer(answer, "/health", {200})["status"]
            entry.health = str(status)
            if status == "ERROR":
                raise NotStarted(f"{entry.model_id}: runner is in error state (/health said ERROR)")
            if status != last_status:
                say(f"Runner health model_id={entry.model_id} status={status}")
            break
        except TRANSPORT_ERRORS as exc:
            if last_status is None:
                say(f"Runner not reachable yet model_id={entry.model_id}: {exc}")
                last_status = "unreachable"
        if time.monotonic() > deadline:
            raise NotStarted(f"{entry.model_id}: timed out waiting for runner (not ready in {timeout_s:g} s)")
        time.sleep(0.5)
    entry.hardware = _json_answer(
        http_request("GET", f"{entry.url}/hardware/info", headers=headers), "/hardware/info", {200}
    )
    say(f"Runner hardware info model_id={entry.model_id}: {json.dumps(entry.hardware, separators=(',', ':'))}")
    version = _json_answer(http_request("GET", f"{entry.url}/version", headers=headers), "/version", {200})
    entry.version_ok = (version.get("pipeline"), version.get("model_id")) == (entry.pipeline, entry.model_id)
    entry.runner_version = str(version.get("version", ""))
    say(
        f"Started runner with version &{{Pipeline:{version.get('pipeline')} ModelId:{version.get('model_id')} "
        f"Version:{entry.runner_version}}} version={entry.runner_version} echoes_entry={entry.version_ok}"
    )


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


def parse_multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """A multipart/form-data body as {field name: bytes} (the standard library's email parser)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, bytes] = {}
    if message.is_multipart():
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload
    return fields


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _http_server(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> _Server:
    host = host.strip("[]")
    return (_Server6 if ":" in host else _Server)((host, port), handler)


class Orchestrator:
    """The orchestrator's side: its entries, their slots, and the BYOC registry served over HTTP."""

    def __init__(
        self,
        entries: list[AIModelConfig],
        *,
        orch_secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.entries = entries
        self.orch_secret = orch_secret
        self.registrations: dict[str, dict[str, Any]] = {}
        self.unregistered: list[str] = []
        self._in_use: dict[int, int] = {}
        self._lock = threading.Lock()
        self._log = log or (lambda _: None)
        self._server = _http_server(host, port, self._handler())
        url_host = host.strip("[]") or "127.0.0.1"
        url_host = f"[{url_host}]" if ":" in url_host else url_host
        self.url = f"http://{url_host}:{self._server.server_port}"

    def serve(self) -> None:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

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
            response = http_request(
                "POST",
                f"{entry.url}/upscale",
                body=body,
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
                if self.path.rstrip("/") == "/upscale":
                    self._upscale(body)
                    return
                self._reply(404, b"not found")

            def _upscale(self, body: bytes) -> None:
                fields = parse_multipart(body, self.headers.get("Content-Type", ""))
                model_id = fields.get("model_id", b"").decode()
                upscalers = [e for e in orchestrator.entries if e.pipeline == "upscale" and e.url]
                entry = next((e for e in upscalers if e.model_id == model_id), None)
                if entry is None and not model_id and len(upscalers) == 1:
                    entry = upscalers[0]
                if entry is None or "image" not in fields:
                    detail = {"detail": {"msg": f"no upscale entry for model_id {model_id!r}, or no image"}}
                    self._reply(400, json.dumps(detail).encode(), "application/json")
                    return
                seed = fields.get("seed")
                try:
                    status, answer = orchestrator.upscale(entry, fields["image"], seed=int(seed) if seed else None)
                except GoLivepeerPanic as exc:  # net/http recovers a handler's panic and drops the connection
                    orchestrator._log(f"http: panic serving {self.client_address[0]}: {exc}")
                    self.close_connection = True
                    return
                except TRANSPORT_ERRORS as exc:
                    detail = {"detail": {"msg": f"runner unreachable: {exc}"}}
                    self._reply(500, json.dumps(detail).encode(), "application/json")
                    return
                self._reply(status, json.dumps(answer).encode(), "application/json")

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
                    answer = http_request(
                        "POST", f"{registration['url']}/{subpath}", body=body, headers=headers, timeout=300
                    )
                except TRANSPORT_ERRORS:
                    orchestrator.registrations.pop(name, None)  # go-livepeer drops the capability
                    self._reply(502, b"runner unreachable")
                    return
                if answer.status_code == 401:
                    orchestrator.registrations.pop(name, None)
                passed = {k: v for k, v in answer.headers.items() if k == "x-metadata"}
                self._reply(answer.status_code, answer.content, answer.headers.get("content-type", ""), passed)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


# --- the command line: go-livepeer's `livepeer` ------------------------------------------------------------------

# Every flag of go-livepeer's `livepeer` (cmd/livepeer/livepeer.go and starter/flags.go): name, type, default.
# Defaults are given only where they matter here; the rest are "", false or 0.
_FLAG_TABLE = """
network string offchain
rtmpAddr string
cliAddr string
httpAddr string
serviceAddr string
nodes string
verifierUrl string
verifierPath string
localVerify bool true
httpIngest bool true
orchAddr string
orchWebhookUrl string
extraNodes int
orchBlocklist string
orchMinLivepeerVersion string
selectRandFreq float
selectStakeWeight float
selectPriceWeight float
selectPriceExpFactor float
orchPerfStatsUrl string
region string
maxPricePerUnit string
maxPricePerCapability string
ignoreMaxPriceIfNeeded bool
minPerfScore float
discoveryTimeout duration
gatewayHost string
orchestrator bool
transcoder bool
gateway bool
broadcaster bool
orchSecret string
transcodingOptions string
maxAttempts int
maxSessions string 10
currentManifest bool
nvidia string
netint string
testTranscoder bool true
hevcDecoding bool
aiServiceRegistry bool
aiWorker bool
aiModels string
aiModelsDir string
aiRunnerImage string
aiVerboseLogs bool
aiRunnerImageOverrides string
aiProcessingRetryTimeout duration
aiRunnerContainersPerGPU int 1
aiMinRunnerVersion string
mediaMTXApiPassword string
liveAITrickleHostForRunner string
liveAIAuthApiKey string
liveAIHeartbeatURL string
liveAIHeartbeatHeaders string
liveAIHeartbeatInterval duration
liveAIAuthWebhookUrl string
livePaymentInterval duration
liveOutSegmentTimeout duration
liveAICapRefreshModels string
liveAISaveNSegments int 10
ethAcctAddr string
ethPassword string
ethKeystorePath string
ethOrchAddr string
ethUrl string
transactionTimeout duration
maxTransactionReplacements int
gasLimit int
minGasPrice int
maxGasPrice int
ethController string
initializeRound bool
initializeRoundMaxDelay duration
ticketEV string
maxFaceValue string
maxTicketEV string
maxTotalEV string
depositMultiplier int
ignoreSenderReserve bool
pricePerUnit string 0
pixelsPerUnit string 1
priceFeedAddr string
autoAdjustPrice bool
pricePerGateway string
pricePerBroadcaster string
blockPollingInterval int
redeemer bool
redeemerAddr string
reward bool
monitor bool
metricsPerStream bool
metricsClientIP bool
metadataQueueUri string
metadataAmqpExchange string
metadataPublishTimeout duration
datadir string
dataDir string
objectStore string
recordStore string
FVfailGsbucket string
FVfailGskey string
authWebhookUrl string
startupAvailabilityCheck bool true
kafkaBootstrapServers string
kafkaUser string
kafkaPassword string
kafkaGatewayTopic string
j bool
version bool
v string 3
config string
"""
_DEFAULT_OF_KIND = {"bool": "false", "string": "", "int": "0", "float": "0", "duration": "0s"}
FLAGS: dict[str, tuple[str, str]] = {  # name → (kind, default text)
    name: (kind, rest[0] if rest else _DEFAULT_OF_KIND[kind])
    for name, kind, *rest in (line.split() for line in _FLAG_TABLE.strip().splitlines())
}
_STORAGE = {"dataDir": "datadir"}  # go-livepeer binds both names to one variable
SECRET_FLAGS = frozenset({"orchSecret", "ethPassword", "kafkaPassword", "mediaMTXApiPassword", "liveAIAuthApiKey"})
_FILE_SECRETS = frozenset({"orchSecret", "ethPassword"})  # go-livepeer reads these from a file when they name one
_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class _Exit(Exception):
    """Stop with this exit status (its message is already out)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Terminated(Exception):
    """SIGTERM or SIGINT while starting."""


def _go_bool(text: str) -> bool:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError("parse error")


def _go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds."""
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    matches = list(_DURATION.finditer(body))
    if not body or "".join(m.group(0) for m in matches) != body or any(m.group(1) in ("", ".") for m in matches):
        raise ValueError("parse error")
    seconds = sum(float(m.group(1)) * _DURATION_UNITS[m.group(2)] for m in matches)
    return -seconds if text.startswith("-") else seconds


def _convert(kind: str, text: str) -> Any:
    """A flag's text as its Go type; ValueError("parse error") as Go's flag.Value.Set fails."""
    try:
        if kind == "bool":
            return _go_bool(text)
        if kind == "int":
            value = int(text, 0)
            if not -(2**63) <= value < 2**63:
                raise ValueError("value out of range")
            return value
        if kind == "float":
            return float(text)
        if kind == "duration":
            return _go_duration(text)
    except ValueError as exc:
        raise ValueError("value out of range" if "range" in str(exc) else "parse error") from None
    return text


def _goq(text: str) -> str:
    """Go's %q, near enough."""
    return json.dumps(text, ensure_ascii=False)


class Log:
    """glog-like lines on stderr: ``Lmmdd hh:mm:ss.uuuuuu pid file] message``."""

    def __init__(self, verbosity: int = 3) -> None:
        self.verbosity = verbosity
        self._lock = threading.Lock()

    def _line(self, level: str, message: str) -> None:
        now = datetime.now()
        with self._lock:
            for text in message.splitlines() or [""]:
                sys.stderr.write(f"{level}{now:%m%d %H:%M:%S.%f} {os.getpid():7d} livepeer-double] {text}\n")
            sys.stderr.flush()

    def info(self, message: str) -> None:
        self._line("I", message)

    def v(self, level: int, message: str) -> None:
        if self.verbosity >= level:
            self._line("I", message)

    def warning(self, message: str) -> None:
        self._line("W", message)

    def error(self, message: str) -> None:
        self._line("E", message)

    def exit(self, message: str, code: int = 1) -> _Exit:
        """glog.Exit: the message at FATAL, then exit 1. Returns the exception to raise."""
        self._line("F", message)
        return _Exit(code)


@dataclass
class Flags:
    """The flags in effect, each as its Go type, with where it came from."""

    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[_STORAGE.get(name, name)]

    def set(self, name: str, text: str, source: str) -> None:
        kind, _ = FLAGS[name]
        self.values[_STORAGE.get(name, name)] = _convert(kind, text)
        self.sources[name] = source

    def text(self, name: str) -> str:
        value = self[name]
        if isinstance(value, bool):
            return "true" if value else "false"
        if FLAGS[name][0] == "duration":
            return f"{value:g}s"
        return str(value)


def _usage(prog: str) -> str:
    lines = [f"Usage of {prog}:"]
    for name in sorted(FLAGS, key=str.lower):
        kind, default = FLAGS[name]
        shown = "" if kind == "bool" else f" {kind}"
        suffix = f" (default {_goq(default) if kind == 'string' else default})" if default not in ("", "false") else ""
        lines.append(f"  -{name}{shown}{suffix}")
    lines.append("(a double of go-livepeer: flags are go-livepeer's; see tests/doubles/orchestrator.py)")
    return "\n".join(lines)


def _flag_failure(prog: str, message: str) -> _Exit:
    """Go's flag.ExitOnError: the error and the usage on the flag set's output (stdout in go-livepeer), exit 2."""
    sys.stdout.write(f"{message}\n{_usage(prog)}\n")
    sys.stdout.flush()
    return _Exit(2)


def _parse_command_line(flags: Flags, args: list[str], prog: str) -> set[str]:
    """Go's flag.FlagSet.Parse: stops at the first non-flag argument or after ``--``. Returns the names set."""
    provided: set[str] = set()
    index = 0
    while index < len(args):
        arg = args[index]
        if len(arg) < 2 or arg[0] != "-":
            break
        dashes = 2 if arg[1] == "-" else 1
        if arg == "--":
            break
        name = arg[dashes:]
        if not name or name[0] in "-=":
            raise _flag_failure(prog, f"bad flag syntax: {arg}")
        index += 1
        name, has_value, value = name.partition("=") if "=" in name[1:] else (name, "", "")
        if name not in FLAGS:
            if name in ("help", "h"):
                sys.stdout.write(_usage(prog) + "\n")
                raise _Exit(0)
            raise _flag_failure(prog, f"flag provided but not defined: -{name}")
        if FLAGS[name][0] == "bool" and not has_value:
            value, has_value = "true", "="
        elif not has_value:
            if index >= len(args):
                raise _flag_failure(prog, f"flag needs an argument: -{name}")
            value, index = args[index], index + 1
        try:
            flags.set(name, value, "command line")
        except ValueError as exc:
            if FLAGS[name][0] == "bool":
                raise _flag_failure(prog, f"invalid boolean value {_goq(value)} for -{name}: {exc}") from None
            raise _flag_failure(prog, f"invalid value {_goq(value)} for flag -{name}: {exc}") from None
        provided.add(name)
    return provided


def _plain_config_lines(text: str) -> list[tuple[str, str]]:
    """ff's PlainParser: ``name value`` split at the first space, ``#`` comments, a bare ``name`` is true."""
    pairs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, space, value = line.partition(" ")
        value = value.strip() if space else "true"
        if " #" in value:
            value = value[: value.index(" #")].strip()
        pairs.append((name, value))
    return pairs


def parse_flags(args: list[str], environ: dict[str, str], log: Log, prog: str = "livepeer") -> Flags:
    """go-livepeer's ff.Parse: command line, then ``LP_<FLAG>`` variables, then the ``-config`` file."""
    flags = Flags({_STORAGE.get(name, name): _convert(kind, default) for name, (kind, default) in FLAGS.items()})
    provided = _parse_command_line(flags, args, prog)
    for name in sorted(FLAGS):
        key = "LP_" + re.sub(r"[-./]", "_", name).upper()
        value = environ.get(key, "")
        if name in provided or value == "":
            continue
        try:
            flags.set(name, value, "environment")
        except ValueError as exc:
            message = f'error parsing env vars: error setting flag "{name}" from env var "{key}": {exc}'
            raise log.exit(f"Error parsing config: {message}") from None
        provided.add(name)
    config = flags["config"]
    if config:
        try:
            text = Path(config).read_text()
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise log.exit(f"Error parsing config: open {config}: {reason}") from None
        for name, value in _plain_config_lines(text):
            if name in provided:
                continue
            if name not in FLAGS:
                raise log.exit(f'Error parsing config: config file flag "{name}" not defined in flag set')
            try:
                flags.set(name, value, "config file")
            except ValueError as exc:
                raise log.exit(f'Error parsing config: error setting flag "{name}" from config file: {exc}') from None
    return flags


def read_from_file(value: str) -> tuple[str, str]:
    """go-livepeer's common.ReadFromFile: a readable non-empty file's trimmed text, else the value itself.

    Returns (secret, how it was read) so the double can say what go-livepeer silently does.
    """
    path = Path(value)
    try:
        if path.is_dir():
            return value, "a directory: the value itself is used"
        text = path.read_text().strip()
    except OSError as exc:
        return value, f"not a readable file ({exc.strerror or exc}): the value itself is used"
    if not text:
        return value, "an empty file: the value itself is used"
    return text, f"read from {value}"


def _masked(flags: Flags, name: str) -> str:
    value = flags.text(name)
    if name not in SECRET_FLAGS or not value:
        return value
    if name in _FILE_SECRETS and Path(value).is_file():
        return f"<file {value}>"
    return "***"


def _default_addr(addr: str, host: str, port: str) -> str:
    """go-livepeer's defaultAddr."""
    if not addr:
        return f"{host}:{port}"
    if addr.startswith(":"):
        return host + addr
    if ":" not in addr:
        return f"{addr}:{port}"
    return addr


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _docker_problem(environ: dict[str, str]) -> str | None:
    """Why go-livepeer's Docker client could not list containers, or None when a daemon socket is there."""
    docker_host = environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    failure = f"Cannot connect to the Docker daemon at {docker_host}. Is the docker daemon running?"
    if docker_host.startswith("unix://"):
        try:
            mode = Path(docker_host.removeprefix("unix://")).stat().st_mode
        except OSError:
            return failure
        return None if stat.S_ISSOCK(mode) else failure
    parsed = urllib.parse.urlsplit(docker_host)
    try:
        socket.create_connection((parsed.hostname or "", parsed.port or 2375), timeout=1).close()
    except OSError:
        return failure
    return None


def _nvidia_pci_devices() -> int:
    """How many NVIDIA display controllers the PCI bus lists (what go-livepeer's -nvidia all detects)."""
    count = 0
    for device in Path("/sys/bus/pci/devices").glob("*"):
        with contextlib.suppress(OSError):
            vendor = (device / "vendor").read_text().strip()
            klass = (device / "class").read_text().strip()
            count += vendor == "0x10de" and klass.startswith("0x03")
    return count


def _price_text(value: Fraction | None) -> str | None:
    if value is None:
        return None
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


class Node:
    """One run of the ``livepeer`` double: start-up as go-livepeer's StartLivepeer, then the served ports."""

    def __init__(self, flags: Flags, environ: dict[str, str], log: Log) -> None:
        self.flags, self.environ, self.log = flags, environ, log
        self.mode = ""
        self.entries: list[AIModelConfig] = []
        self.orch_secret = ""
        self.service_uri = ""
        self.http_addr = ""
        self.cli_addr = ""
        self.orchestrator: Orchestrator | None = None
        self.cli_server: _Server | None = None
        self.started_at = time.time()

    # --- start-up ---------------------------------------------------------------------------------------------

    def start(self) -> bool:
        """go-livepeer's StartLivepeer up to serving; False where it logs an error and returns (exit 0)."""
        flags, log = self.flags, self.log
        log.info(f"***Livepeer is running on the {flags['network']} network***")
        log.warning("This is a double of go-livepeer (tests/doubles/orchestrator.py), not go-livepeer")
        if not self._datadir():
            return False
        if flags["orchSecret"]:
            self.orch_secret, how = read_from_file(flags["orchSecret"])
            log.info(f"-orchSecret: {how}")
        if flags["ethPassword"]:
            log.info(f"-ethPassword: {read_from_file(flags['ethPassword'])[1]}")
        if flags["redeemer"] or flags["transcoder"] or flags["gateway"] or flags["broadcaster"]:
            raise log.exit("the double plays only -orchestrator and -aiWorker nodes", 2)
        if flags["orchestrator"]:
            self.mode = "orchestrator"
        elif flags["aiWorker"]:
            self.mode = "ai-worker"
        elif not flags["reward"] and not flags["initializeRound"]:
            log.error(
                "No services enabled; must be at least one of -gateway, -transcoder, -aiWorker, -orchestrator, "
                "-redeemer, -reward or -initializeRound"
            )
            raise _Exit(2)
        else:
            raise log.exit("the double plays only -orchestrator and -aiWorker nodes", 2)
        if flags["network"] == "offchain":
            log.info("***Livepeer is in off-chain mode***")
        elif not flags["ethUrl"]:
            raise log.exit("Need to specify an Ethereum node JSON-RPC URL using -ethUrl")
        else:
            log.warning(
                f"double: go-livepeer would dial {flags['ethUrl']} and unlock {flags['ethAcctAddr'] or 'its account'} "
                "with -ethPassword here; the double has no chain"
            )
        return self._ai_worker() and self._ai_models() and self._addresses()

    def _datadir(self) -> bool:
        datadir = self.flags["datadir"]
        if not datadir:
            home = self.environ.get("HOME") or str(Path.home())
            datadir = str(Path(home) / ".lpData" / self.flags["network"])
            self.flags.values["datadir"] = datadir
        path = Path(datadir)
        if not path.exists():
            self.log.info(f"Creating data dir: {datadir}")
            try:
                path.mkdir(mode=0o755, parents=True)
            except OSError as exc:
                self.log.error(f"Error creating datadir: {exc}")
        try:
            if sqlite3 is None:
                (path / "lpdb.sqlite3").touch()
            else:
                with contextlib.closing(sqlite3.connect(path / "lpdb.sqlite3")) as db, db:
                    db.execute("CREATE TABLE IF NOT EXISTS kv (key STRING PRIMARY KEY, value STRING)")
                    db.execute("INSERT OR REPLACE INTO kv VALUES ('chainID', '0')")
        except (OSError, getattr(sqlite3, "Error", OSError)) as exc:
            self.log.error(f"Error opening DB: {exc}")
            return False
        return True

    def _ai_worker(self) -> bool:
        flags, log = self.flags, self.log
        if not flags["aiWorker"]:
            return True
        if flags["nvidia"] == "all":
            found = _nvidia_pci_devices()
            if not found:
                log.error("Error parsing -nvidia for devices: no devices found with vendor name 'Nvidia'")
                return False
            log.info(f"-nvidia all: {found} NVIDIA device(s) on the PCI bus")
        elif not flags["nvidia"]:
            log.warning("!!! No GPU discovered, using CPU for AIWorker !!!")
        problem = _docker_problem(self.environ)
        if problem and self.environ.get("LIVEPEER_DOUBLE_REQUIRE_DOCKER") == "1":
            log.error(f"Error starting AI worker: {problem}")
            return False
        if problem:
            log.warning(
                f"double: no Docker daemon ({problem}). go-livepeer stops here with 'Error starting AI worker' and "
                "exits 0 without serving; the double goes on (LIVEPEER_DOUBLE_REQUIRE_DOCKER=1 stops it)"
            )
        overrides = flags["aiRunnerImageOverrides"]
        if overrides:
            try:
                json.loads(overrides)
            except ValueError as exc:
                log.error(f"Error unmarshaling image overrides: {exc}")
                return False
        return True

    def _ai_models(self) -> bool:
        flags, log = self.flags, self.log
        if not flags["aiModels"]:
            if self.mode == "ai-worker":
                log.error(
                    "The '-aiWorker' flag was set, but no model configuration was provided. Please specify the "
                    "model configuration using the '-aiModels' flag."
                )
                return False
            return True
        path = Path(flags["aiModels"])
        try:
            if not path.is_file():  # go-livepeer then reads the value as "pipeline:model_id:warm,..."
                raise NotStarted("invalid AI model config expected <pipeline>:<model_id>:<warm>")
            self.entries = load_ai_models(path)
        except NotStarted as exc:
            log.error(f"Error parsing -aiModels: {exc}")
            return False
        image = self._runner_image()
        timeout_s = float(self.environ.get("LIVEPEER_DOUBLE_RUNNER_TIMEOUT_S") or 120)
        for entry in self.entries:
            self._check_price(entry)
            if not flags["aiWorker"]:
                continue  # an orchestrator without -aiWorker only prices its entries
            log.info(f"double: not checking that the runner image {image} is present for {entry.pipeline}")
            if not entry.url:
                log.warning(
                    f"double: {entry.pipeline} {entry.model_id!r} has no url: go-livepeer would start a managed "
                    "runner container (Docker, a runner image); the double skips it"
                )
                continue
            try:
                handshake(entry, timeout_s=timeout_s, log=log.info)
            except NotStarted as exc:
                log.error(f"Error AI worker warming {entry.pipeline} container: {exc}")
                return False
            if not entry.version_ok:
                log.warning(f"Runner /version of {entry.model_id!r} does not echo its entry; go-livepeer ignores it")
            log.v(6, f"Capability {entry.pipeline} advertised with model constraint {entry.model_id}")
        return True

    def _runner_image(self) -> str:
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(self.flags["aiRunnerImageOverrides"]).get("default") or "livepeer/ai-runner")
        return self.flags["aiRunnerImage"] or "livepeer/ai-runner"

    def _check_price(self, entry: AIModelConfig) -> None:
        if self.flags["network"] == "offchain" or entry.price_per_unit is not None:
            return
        number = re.match(r"^[0-9.eE+-]*", self.flags["pricePerUnit"]).group(0)  # type: ignore[union-attr]
        with contextlib.suppress(ValueError, ArithmeticError):
            if Fraction(Decimal(number)) != 0:
                return
        raise GoLivepeerPanic(f"'pricePerUnit' must be set for model '{entry.model_id}' in pipeline '{entry.pipeline}'")

    def _addresses(self) -> bool:
        flags, log = self.flags, self.log
        if self.mode == "orchestrator":
            self.cli_addr = _default_addr(flags["cliAddr"], "127.0.0.1", "7935")
            if flags["serviceAddr"]:
                self.service_uri = f"https://{flags['serviceAddr']}"
                self.http_addr = _default_addr(flags["httpAddr"], "", str(_split_addr(flags["serviceAddr"])[1]))
            else:
                log.warning(
                    "double: -serviceAddr not set: go-livepeer would look up this host's public IP at api.ipify.org "
                    "(exit 1, 'Error getting service URI', when it cannot); the double does not"
                )
                self.http_addr = flags["httpAddr"]
            if not flags["aiWorker"] and not self.orch_secret:
                if not flags["aiModels"]:
                    raise log.exit(
                        "Running an orchestrator requires an -orchSecret for standalone mode or -transcoder for "
                        "orchestrator+transcoder mode"
                    )
                log.info("Running an orchestrator in AI External Container mode")
        else:
            self.cli_addr = _default_addr(flags["cliAddr"], "127.0.0.1", "4935")
        return True

    # --- serving ----------------------------------------------------------------------------------------------

    def serve(self) -> bool:
        """Open the ports; False where go-livepeer's StartLivepeer returns."""
        flags, log = self.flags, self.log
        try:
            host, port = _split_addr(self.cli_addr)
            self.cli_server = _http_server(host, port, self._cli_handler())
        except (OSError, ValueError) as exc:
            log.error(f"CLI webserver: listen tcp {self.cli_addr}: {exc}")
            log.info("CLI webserver shut down")
            return False
        threading.Thread(target=self.cli_server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        log.info(
            f"CLI server listening on {self.cli_addr} (plain HTTP: /status{', /metrics' if flags['monitor'] else ''})"
        )
        if self.mode == "orchestrator" and self.http_addr:
            try:
                host, port = _split_addr(_default_addr(self.http_addr, "", "8935"))
                self.orchestrator = Orchestrator(
                    self.entries, orch_secret=self.orch_secret, host=host, port=port, log=log.error
                )
            except (OSError, ValueError) as exc:
                log.error(f"Error starting Transcoder node: err={_goq(str(exc))}")
                raise _Exit(2) from None
            self.orchestrator.serve()
            log.info(
                f"Orchestrator listening on {self.http_addr} for {self.service_uri or 'no service URI'} "
                "(double: plain HTTP, not TLS: BYOC /capability/*, /process/request/*, POST /upscale)"
            )
            if flags["startupAvailabilityCheck"] and self.service_uri and not self._available():
                log.info(f"Orchestrator not available at {self.service_uri} ({self.http_addr}); shutting down")
                return False
        if self.mode == "ai-worker":
            if not self.orch_secret:
                raise log.exit("Missing -orchSecret")
            if not flags["orchAddr"]:
                raise log.exit("Missing -orchAddr")
            orch = flags["orchAddr"].split(",")[0].strip()
            log.warning(
                f"double: go-livepeer would now connect to the orchestrator at {orch} (gRPC, with -orchSecret) and "
                "take its AI jobs; the double does not connect"
            )
            log.info("**Livepeer Running in AI Worker Mode**")
        else:
            log.info("***Livepeer Running in Orchestrator Mode***")
        log.info(f"Livepeer Node version: {DOUBLE_VERSION}")
        return True

    def _available(self) -> bool:
        host, port = _split_addr(self.flags["serviceAddr"])
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self.orchestrator is not None:
            self.orchestrator.close()
        if self.cli_server is not None:
            self.cli_server.shutdown()
            self.cli_server.server_close()

    def status(self) -> dict[str, Any]:
        flags = self.flags
        node_type = "orch" if self.mode == "orchestrator" else "aiworker"
        return {
            "double": "a double of go-livepeer (tests/doubles/orchestrator.py), not go-livepeer",
            "Version": DOUBLE_VERSION,
            "GolangRuntimeVersion": f"none: Python {platform.python_version()}",
            "GOArch": _go_arch(),
            "GOOS": sys.platform,
            "NodeType": node_type,
            "mode": self.mode,
            "uptime_s": round(time.time() - self.started_at, 3),
            "cli_addr": self.cli_addr,
            "service_uri": self.service_uri,
            "http_addr": self.http_addr,
            "orch_addr": flags["orchAddr"],
            "flags": {name: _masked(flags, name) for name in sorted(flags.sources)},
            "flag_sources": dict(sorted(flags.sources.items())),
            "ai_models": [
                {
                    "pipeline": e.pipeline,
                    "model_id": e.model_id,
                    "url": e.url,
                    "token_set": bool(e.token),
                    "warm": e.warm,
                    "capacity": e.capacity,
                    "gateway": e.gateway,
                    "price_per_unit": _price_text(e.price_per_unit),
                    "pixels_per_unit": _price_text(e.pixels_per_unit),
                    "currency": e.currency,
                    "status": e.health or ("skipped" if not e.url or not flags["aiWorker"] else "unchecked"),
                    "runner_version": e.runner_version,
                    "version_echoes_entry": e.version_ok,
                    "hardware": e.hardware,
                }
                for e in self.entries
            ],
            "byoc": sorted(self.orchestrator.registrations) if self.orchestrator else [],
        }

    def metrics(self) -> str:
        node_type = "orch" if self.mode == "orchestrator" else "aiworker"
        lines = [
            "# HELP livepeer_versions Versions used by Livepeer node (a double of go-livepeer).",
            "# TYPE livepeer_versions gauge",
            f'livepeer_versions{{livepeer_version="{DOUBLE_VERSION}",node_type="{node_type}"}} 1',
            "# HELP livepeer_ai_runner_ready External AI runners that passed the start-up handshake (double).",
            "# TYPE livepeer_ai_runner_ready gauge",
        ]
        lines += [
            f'livepeer_ai_runner_ready{{pipeline="{e.pipeline}",model_id="{e.model_id}"}} '
            f"{1 if e.health and e.health != 'ERROR' else 0}"
            for e in self.entries
        ]
        registered = len(self.orchestrator.registrations) if self.orchestrator else 0
        lines += [
            "# HELP livepeer_byoc_capabilities BYOC capabilities registered with this orchestrator (double).",
            "# TYPE livepeer_byoc_capabilities gauge",
            f"livepeer_byoc_capabilities {registered}",
        ]
        return "\n".join(lines) + "\n"

    def _cli_handler(self) -> type[BaseHTTPRequestHandler]:
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                if path == "/status":
                    self._reply(200, json.dumps(node.status(), indent=1).encode(), "application/json")
                elif path == "/metrics" and node.flags["monitor"]:
                    self._reply(200, node.metrics().encode(), "text/plain; version=0.0.4")
                else:
                    self._reply(404, b"404 page not found\n", "text/plain; charset=utf-8")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _go_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _print_version() -> None:
    sys.stdout.write(
        f"Livepeer Node Version: {DOUBLE_VERSION}\n"
        f"Golang runtime version: none: a Python double of go-livepeer (Python {platform.python_version()})\n"
        f"Architecture: {_go_arch()}\n"
        f"Operating system: {sys.platform}\n"
    )


_SIGNAL_NAMES = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupt"}


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """``livepeer [flags]``: go-livepeer's start-up, then serve until SIGTERM/SIGINT. Returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    env = dict(os.environ) if environ is None else environ
    log = Log()
    try:
        flags = parse_flags(args, env, log, prog=sys.argv[0] if argv is None else "livepeer")
        with contextlib.suppress(ValueError):
            log.verbosity = int(flags["v"])
        if flags["j"]:
            sys.stdout.write(json.dumps({"name": "livepeer", "version": DOUBLE_VERSION, "double": True}) + "\n")
            return 0
        if flags["version"]:
            _print_version()
            return 0
        return _run(Node(flags, env, log))
    except _Exit as exc:
        return exc.code
    except GoLivepeerPanic as exc:
        sys.stderr.write(f"panic: {exc}\n\ngoroutine 1 [running]:\n(a double of go-livepeer: no Go stack)\n")
        return 2


def _run(node: Node) -> int:
    stop = threading.Event()
    state = {"serving": False, "signal": "terminated"}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        state["signal"] = _SIGNAL_NAMES.get(signal.Signals(signum), str(signum))
        stop.set()
        if not state["serving"]:
            raise _Terminated

    previous = {sig: signal.signal(sig, on_signal) for sig in _SIGNAL_NAMES}
    try:
        if node.start() and node.serve():
            state["serving"] = True
            if not stop.is_set():
                stop.wait()
            node.log.info(f"Exiting Livepeer: {state['signal']}")
    except _Terminated:
        node.log.info(f"Exiting Livepeer: {state['signal']}")
    finally:
        state["serving"] = True  # a signal from now on only stops
        node.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    node.log.info("Graceful shutdown complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
