"""Inference threads run at a lowered priority, and threads they start (onnxruntime's pool) inherit it."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from appliance.priority import lower_thread_priority
from appliance.server.capacity import CapacityLimiter, Timing

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are a Linux feature")


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_lowered_thread_and_its_children_but_not_the_caller() -> None:
    base = _own_nice()
    seen: dict[str, int] = {}

    def lowered() -> None:
        lower_thread_priority(5)
        seen["thread"] = _own_nice()
        child = threading.Thread(target=lambda: seen.__setitem__("child", _own_nice()))
        child.start()
        child.join()

    thread = threading.Thread(target=lowered)
    thread.start()
    thread.join()
    assert seen == {"thread": min(base + 5, 19), "child": min(base + 5, 19)}
    assert _own_nice() == base, "the calling thread (the event loop's) keeps its priority"


def test_capacity_limiter_runs_inference_at_lowered_priority() -> None:
    base = _own_nice()
    limiter = CapacityLimiter("test", capacity=1, queue=0, niceness=7)
    try:
        assert asyncio.run(limiter.run(_own_nice, Timing())) == min(base + 7, 19)
    finally:
        limiter.shutdown()
