"""Optionally lowering the CPU priority of inference against the event loop (``worker.inference_niceness``).

Linux schedules threads, and a thread's nice value is its own and inherited by the threads it starts. Model
sessions are created, and inference runs, on threads that lower their own priority by the configured amount:
onnxruntime's thread pool, started by the session, inherits it, while the event loop thread keeps the process's
priority. It is 0 (off) by default: measured on a 2-core host, ``/health`` stayed within a few milliseconds
under saturation without it, while a lowered priority made onnxruntime's threads, which wait on each other at
every operator, lose the CPU to any other process that ran (bench/PEERS.md).
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
