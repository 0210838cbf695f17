"""The worker's one exception hierarchy and the one handler that turns any error into the contract's body.

Each error class carries its status code and a metrics reason; nothing picks a status by reading message text.
go-livepeer's client decodes only the statuses the contract lists for a route, and crashes on anything else
(429, 503, non-JSON), so the handler narrows every answer to the route's own list: a 4xx the route does not
list becomes 400, a 5xx becomes 500. Busy is always 500 with ``insufficient capacity`` in the message.
"""

from __future__ import annotations

import traceback
from typing import Any, ClassVar

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException

__all__ = [
    "BYOC_STATUSES",
    "CONTRACT_STATUSES",
    "INFO_STATUSES",
    "BadRequest",
    "BodyTimeout",
    "ClientDisconnected",
    "InferenceFailed",
    "InsufficientCapacity",
    "ModelUnavailable",
    "RunnerError",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
    "handle_error",
    "route_name",
    "route_statuses",
]

log = structlog.get_logger("appliance.server")

# Statuses a route without its own list may answer (the worker's own routes).
_DEFAULT_STATUSES = frozenset({200, 400, 401, 404, 405, 413, 415, 422, 500})
# The statuses the contract lists for its generate routes (``/upscale``), for its GET routes (plus 401 and 500,
# which ai-runner answers there too), and what the routes go-livepeer reaches through BYOC may answer.
CONTRACT_STATUSES = frozenset({200, 400, 401, 422, 500})
INFO_STATUSES = frozenset({200, 401, 500})
BYOC_STATUSES = frozenset({200, 400, 401, 413, 415, 422, 500})


class RunnerError(Exception):
    status_code: ClassVar[int] = 500
    reason: ClassVar[str] = "internal"

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class BadRequest(RunnerError):
    status_code = 400
    reason = "bad_request"


class BodyTimeout(BadRequest):
    """The request body did not arrive in time (a slow or stalled upload). Answered with ``Connection: close``:
    the rest of the body is never read."""

    reason = "body_timeout"


class ClientDisconnected(BadRequest):
    """The client went away before its request body ended. Nobody reads the answer; this keeps the metrics and
    the log from counting the client's disconnect as the worker's own 500."""

    reason = "client_disconnected"


class Unauthorized(RunnerError):
    status_code = 401
    reason = "unauthorized"


class UnsupportedMediaType(RunnerError):
    status_code = 415
    reason = "unsupported_media_type"


class ValidationFailed(RunnerError):
    """422 in FastAPI's shape: ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``."""

    status_code = 422
    reason = "validation"

    def __init__(self, loc: list[str | int], msg: str, type_: str) -> None:
        super().__init__(msg)
        self.loc, self.type = loc, type_


class InsufficientCapacity(RunnerError):
    """Every slot and queue place is taken. The gateway sees the text and tries another orchestrator."""

    reason = "capacity"

    def __init__(self, why: str = "all slots and queue places are busy") -> None:
        super().__init__(f"insufficient capacity: {why}")


class ModelUnavailable(RunnerError):
    reason = "model_unavailable"


class InferenceFailed(RunnerError):
    reason = "inference"


def route_statuses(request: Request[Any, Any, Any]) -> frozenset[int]:
    handler = request.scope.get("route_handler")
    statuses = handler.opt.get("statuses") if handler is not None else None
    return frozenset(statuses) if statuses else _DEFAULT_STATUSES


def route_name(scope: Any) -> str:
    """The matched route's name (a bounded label set), not the raw path (unbounded)."""
    handler = scope.get("route_handler")
    name = getattr(handler, "name", None)
    return str(name) if name else "unmatched"


def _bounded(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def _narrow(status: int, allowed: frozenset[int]) -> int:
    if status in allowed:
        return status
    return 500 if status >= 500 else 400


def _unknown_entry_route(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """A 404 under ``/m/``: most likely a wrong capability or model_id in a URL. Name what this worker serves
    (the path itself is not echoed: it may carry anything a client put there)."""
    served = request.app.state.get("served_routes")
    listed = served(request) if served is not None else None
    if listed is None:  # a worker with a token tells a caller without it nothing about its models
        return {"detail": {"msg": "Not Found"}}
    routes = msgspec.to_builtins(listed)
    listing = "; ".join(f"{r['capability']} {r['model_id']!r} at {r['base_path']} ({r['inference']})" for r in routes)
    msg = f"no such route on this worker. It serves: {listing or 'nothing'}. The index is GET /"
    return {"detail": {"msg": msg, "served": routes}}


def handle_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Shape ``exc`` as the contract's error body with a status this route may answer."""
    headers: dict[str, str] = {}
    body: dict[str, Any]
    match exc:
        case ValidationFailed():
            status, body = 422, {"detail": [{"loc": exc.loc, "msg": exc.msg, "type": exc.type}]}
        case RunnerError():
            status, body = exc.status_code, {"detail": {"msg": exc.msg}}
            if isinstance(exc, Unauthorized):
                headers["WWW-Authenticate"] = "Bearer"
            elif isinstance(exc, BodyTimeout):
                headers["Connection"] = "close"
        case HTTPException() if exc.status_code == 413:  # Litestar's body-size guard
            limit = request.app.state.get("max_body_bytes")
            status, body = (
                413,
                {"detail": {"msg": f"request body is larger than this worker's limit of {limit} bytes"}},
            )
        case HTTPException() if exc.status_code == 404 and request.url.path.startswith("/m/"):
            status, body = 404, _unknown_entry_route(request)
        case HTTPException():  # Litestar's own: 404, 405, malformed requests
            status, body = exc.status_code, {"detail": {"msg": str(exc.detail)}}
            headers.update(exc.headers or {})
        case _:
            # Type and a bounded message only: an exception's repr can carry the request's bytes.
            log.error(
                "unhandled error",
                error=type(exc).__name__,
                message=_bounded(str(exc)),
                traceback=_bounded(traceback.format_exc(), 4000),
            )
            status, body = 500, {"detail": {"msg": "internal error (logged with this request's id)"}}
    status = _narrow(status, route_statuses(request))
    metrics = request.app.state.get("metrics")
    if metrics is not None:
        reason = exc.reason if isinstance(exc, RunnerError) else f"http_{status}"
        metrics.errors.labels(route_name(request.scope), reason).inc()
    return Response(content=body, status_code=status, media_type="application/json", headers=headers)
