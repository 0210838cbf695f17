"""Reading request bodies: a deadline for the whole body, and a client that leaves mid-upload named as such.

uvicorn bounds the time between requests (``timeout_keep_alive``) but not the time a body takes, so a client
trickling its body a byte at a time would hold its connection, and a SIGTERM drain, for as long as it likes.
This pure ASGI middleware wraps ``receive``: the body's last byte must arrive within ``timeout_s`` of the
request's start, or the request is answered 400 (``BodyTimeout``, sent with ``Connection: close``, so the
rest is never read). A body is read before its model's slot is taken, so a slow upload never holds a slot.

A client that disconnects before its body ended raises ``ClientDisconnected`` instead of Litestar's generic
500: it is the client's doing, and counted as such (``lpa_errors_total{reason="client_disconnected"}``).
"""

from __future__ import annotations

import asyncio

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from appliance.server.errors import BodyTimeout, ClientDisconnected

__all__ = ["BodyDeadlineMiddleware"]


class BodyDeadlineMiddleware:
    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        body_ended = False

        async def receive_body() -> ReceiveMessage:
            nonlocal body_ended
            if body_ended:  # after the body, receive() only reports a disconnect: no deadline on that
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(
                    f"the request body did not arrive within {self.timeout_s:g} s "
                    "(this worker's worker.body_timeout_seconds)"
                ) from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnected("the client disconnected before its request body ended")
            if not message.get("more_body", False):
                body_ended = True
            return message

        await self.app(scope, receive_body, send)
