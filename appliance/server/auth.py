"""Bearer-token check for every route, in constant time. The token itself is never logged."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from appliance.server.errors import Unauthorized

__all__ = ["bearer_check", "bearer_guard"]

Connection = ASGIConnection[Any, Any, Any, Any]


def bearer_check(token: str | None) -> Callable[[Connection], bool]:
    """Whether a connection presents the token (always true when the worker has none)."""
    expected = f"Bearer {token}".encode()

    def presents_token(connection: Connection) -> bool:
        if token is None:
            return True
        presented = connection.headers.get("authorization", "").encode()
        return hmac.compare_digest(presented, expected)

    return presents_token


def bearer_guard(token: str) -> Guard:
    presents_token = bearer_check(token)

    def require_bearer(connection: Connection, _: BaseRouteHandler) -> None:
        if not presents_token(connection):
            raise Unauthorized("missing or invalid bearer token")

    return require_bearer
