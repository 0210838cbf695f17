"""Per-model admission: at most ``capacity`` inferences at once, ``queue`` more waiting, the rest refused.

Inference runs on the model's own thread pool, never on the event loop, so ``/health`` answers while every
model is busy. A slot is released when the inference thread finishes, not when the client goes away, so a
disconnected client can never push the real concurrency past ``capacity``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from appliance.priority import lower_thread_priority
from appliance.server.errors import InsufficientCapacity

__all__ = ["CapacityLimiter", "Timing"]

T = TypeVar("T")


@dataclass
class Timing:
    queued_s: float = 0.0
    inference_s: float = 0.0


class CapacityLimiter:
    def __init__(self, name: str, *, capacity: int, queue: int, niceness: int = 0) -> None:
        self.capacity, self.queue = capacity, queue
        self._executor = ThreadPoolExecutor(
            max_workers=capacity,
            thread_name_prefix=f"infer-{name}",
            initializer=lower_thread_priority,
            initargs=(niceness,),
        )
        self._slots: asyncio.Semaphore | None = None
        self.admitted = 0  # running + waiting
        self.running = 0

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    @property
    def full(self) -> bool:
        """Every slot and queue place is taken: ``run`` would refuse now."""
        return self.admitted >= self.capacity + self.queue

    async def run(self, work: Callable[[], T], timing: Timing) -> T:
        """Run ``work`` in a slot; raises InsufficientCapacity at once when slots and queue are full."""
        if self.full:
            raise InsufficientCapacity()
        if self._slots is None:  # created lazily so it belongs to the serving event loop
            self._slots = asyncio.Semaphore(self.capacity)
        slots = self._slots
        self.admitted += 1
        admitted_at = time.perf_counter()
        try:
            await slots.acquire()
        except BaseException:
            self.admitted -= 1
            raise
        self.running += 1
        started = time.perf_counter()
        timing.queued_s = started - admitted_at

        def release(_: object) -> None:
            timing.inference_s = time.perf_counter() - started
            self.running -= 1
            self.admitted -= 1
            slots.release()

        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        except RuntimeError:  # the executor is shut down: the worker is stopping
            release(None)
            raise InsufficientCapacity("the worker is shutting down") from None
        future.add_done_callback(release)
        return await asyncio.shield(future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
