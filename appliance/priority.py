"""Keeping the event loop ahead of inference for the CPU (``worker.inference_niceness``).

Linux schedules threads, and a thread's nice value is its own and inherited by the threads it starts. Model
sessions are created, and inference runs, on threads that raise their own nice value by the configured amount:
onnxruntime's thread pool, started by the session, inherits it, while the event loop thread keeps the process's.

Measured with ``bench/soak.py`` (2× the admitted load, 1-minute runs, 2-core host): at 0, ``/health`` p99 was
19-24 ms (p50 3.7-4.0 ms), as answering the refused requests competes with inference at equal weight; at 5,
7-11 ms; at 10, 8-9 ms. A lowered priority also makes inference lose the CPU to any other process at a better
one: onnxruntime's threads wait on each other at every operator, so each preemption stalls them all (the soak's
own load generator took 25-35 % of the throughput at 10). Hence the worker unit's ``Nice=-5`` with a default of
5 here: on a provisioned node the event loop runs above the other services, and inference at their level.
"""

from __future__ import annotations

import os
import threading

__all__ = ["lower_thread_priority"]


def lower_thread_priority(niceness: int) -> None:
    """Add ``niceness`` to the calling thread's nice value (Linux); a no-op where threads have no own value."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(current + niceness, 19))
    except OSError:  # not permitted (a seccomp filter, say): serving still works, only less fairly
        return
