"""Bearer-token check for every route, in constant time. The token itself is never logged."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from appliance.server.errors import Unauthorized

__all__ = ["bearer_guard"]


def bearer_guard(token: str) -> Guard:
    expected = f"Bearer {token}".encode()

    def require_bearer(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        presented = connection.headers.get("authorization", "").encode()
        if not hmac.compare_digest(presented, expected):
            raise Unauthorized("missing or invalid bearer token")

    return require_bearer
