"""Structured JSON logs, and the request-id + access-log + request-count middleware.

Log lines carry method, route, status, duration and the request id; never bodies, headers or tokens.
A client's ``X-Request-ID`` is reused when it is short and plain, so one id follows a job end to end.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from appliance.server.errors import route_name
from appliance.server.metrics import Metrics

__all__ = ["RequestLogMiddleware", "configure_logging", "redact"]

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")

# Secrets this process holds (the bearer token, the orchestrator secret): replaced in every log line, whatever
# carried them there (a client sending the token as its X-Request-ID, an exception message quoting it).
_SECRETS: set[str] = set()
_REDACTED = "[redacted]"


def redact(secret: str | None) -> None:
    """Never log ``secret``: from now on it is replaced in every log line, by loggers made before too."""
    if secret:
        _SECRETS.add(secret)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _SECRETS:
            value = value.replace(secret, _REDACTED)
        return value
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def _redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return {key: _scrub(value) for key, value in event.items()} if _SECRETS else event


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks as data, without local variables: a frame's locals can hold the request's bytes.
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
            _redact_secrets,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now, so a logger cached early never holds a closed stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class RequestLogMiddleware:
    """Pure ASGI: cheap enough for ``/health`` under load, and it sees every answer, errors included."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        self.log = structlog.get_logger("appliance.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        presented = dict(scope["headers"]).get(b"x-request-id", b"")
        request_id = presented.decode() if _SAFE_ID.match(presented) else uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = route_name(scope)
                self.metrics.requests.labels(route, str(status)).inc()
                self.log.info(
                    "request",
                    method=scope.get("method"),
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
