"""Draining on SIGTERM: requests in flight finish, new inference requests are refused as busy.

go-livepeer can decode only the statuses the contract lists; a refused or reset connection is none of them. So
while the worker stops, it keeps listening and answers every new inference request 500 ``insufficient
capacity`` (the gateway retries another orchestrator), until the requests already in flight (reading their
body, queued, or inferring) have finished, or ``DRAIN_TIMEOUT_S`` has passed. ``lpa serve`` then lets uvicorn
close the socket and run the shutdown hooks (serve.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from appliance.server.errors import InsufficientCapacity

__all__ = ["DRAIN_TIMEOUT_S", "Drain"]

# The longest a SIGTERM waits for requests in flight. The worker unit's TimeoutStopSec (45 s, systemd/units.toml)
# covers it, uvicorn's graceful shutdown after it (serve.py) and the shutdown hooks, with a margin.
DRAIN_TIMEOUT_S = 30.0


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0  # inference requests between their first byte read and their answer
        self._on_start: list[Callable[[], object]] = []

    def on_start(self, hook: Callable[[], object]) -> None:
        """Call ``hook`` (on the event loop; it must not block) when the drain starts: withdrawing the BYOC
        registrations then, not after the drain, stops the orchestrator sending jobs that would be refused."""
        self._on_start.append(hook)

    def start(self) -> None:
        self.draining = True
        for hook in self._on_start:
            hook()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Hold one inference request in flight; refused as busy once the worker is draining."""
        if self.draining:
            raise InsufficientCapacity("the worker is shutting down")
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
