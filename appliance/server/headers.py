"""A deadline for request headers: a connection that never completes a request's head is closed.

uvicorn closes a connection that stays silent ``timeout_keep_alive`` seconds after a response, but any byte
cancels that timer, and a new connection has no timer at all: a client that connects and sends nothing, or
trickles its headers, holds a connection (a file descriptor, and a place in the SIGTERM drain's shutdown) for
as long as it likes. ``header_deadline_protocol`` returns uvicorn's h11 protocol with one more timer: from the
connection's start, and again from the end of each response, the next request's head must be complete within
``timeout_s``, or the connection is closed. A request whose head has arrived is never cut by this timer (its
body has the body deadline, server/body.py). No answer is sent: no HTTP client sends a head that slowly, and
there is no request yet to answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["header_deadline_protocol"]

log = structlog.get_logger("appliance.server")


def header_deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    class HeaderDeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's head was complete: it has begun
                self._disarm()

        def on_response_complete(self) -> None:
            cycle = self.cycle
            super().on_response_complete()
            if self.cycle is cycle:  # no pipelined request began meanwhile: wait for the next head
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self._deadline = self.loop.call_later(timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being served: its own deadlines apply
            if not self.transport.is_closing():
                client = "%s:%d" % self.client if self.client else None  # noqa: UP031 (a tuple of host, port)
                log.info("connection closed: no complete request head in time", client=client, timeout_s=timeout_s)
                self.transport.close()

    return HeaderDeadlineProtocol
