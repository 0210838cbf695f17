"""The per-model limiter: admission, and no slot lost on any path."""

from __future__ import annotations

import asyncio

import pytest

from appliance.server.capacity import CapacityLimiter, Timing
from appliance.server.errors import InsufficientCapacity


def test_limiter_after_shutdown_refuses_without_leaking_a_slot() -> None:
    limiter = CapacityLimiter("test", capacity=1, queue=0)
    limiter.shutdown()
    with pytest.raises(InsufficientCapacity, match="shutting down"):
        asyncio.run(limiter.run(lambda: 1, Timing()))
    assert (limiter.admitted, limiter.running) == (0, 0)
