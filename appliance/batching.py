"""Dynamic batching: requests that run one model at about the same moment share one graph call.

A :class:`Batcher` wraps a model's backend and is a backend itself, so pipelines do not know about it. Each
request runs on one of the model's ``capacity`` slot threads, as without batching; its ``run`` call joins the
open batch of the same *signature* (input names, dtypes, every dimension after the batch dimension, the outputs
asked for), or opens one. A batch is ready when it holds ``max_size`` rows, when ``max_wait`` has passed since
its first request arrived, or as soon as every request that could still join is already waiting (requests
announce themselves with :func:`caller`), so a lone request never waits. It starts when it is ready and one of
the batcher's ``max_running`` graph-call slots is free (the oldest ready batch first); until then it keeps taking
requests up to ``max_size``: while the model is busy, the next batch fills, as a dynamic batcher's queue does.
The batch's first request (its leader) stacks the inputs along the batch dimension, runs the graph once on its
own slot thread and hands each request its slice of the outputs; the others sleep until then. When the graph
call fails, every request of that batch raises the error (a copy each, same type and message), and the next
batch starts afresh.

Why only same-shape stacking, never padding: padding a smaller input up to a larger one changes a convolutional
net's answer near the padded border and costs work on pixels nobody asked for, so requests whose tensors differ
in shape go into separate batches (a request never waits for one of another shape to fill). Same-shape work is
the common case anyway: segmentation and style nets take one fixed size, an upscaler's full tiles are all
``tile + 2 * border`` square whatever the image, and the frames of one stream share a size.

Capacity is untouched: a batch is made only of requests that already hold one of the model's slots, so at most
``capacity`` requests are in inference at once, batched or not, and the queue and the "insufficient capacity"
answer work exactly as before. That is why ``max_size`` may not exceed ``capacity`` (config.py checks it); the
runtime gives the batcher ``ceil(capacity / max_size)`` graph-call slots.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from appliance.backends.base import Backend, BackendError

if TYPE_CHECKING:
    from appliance.catalog import Manifest
    from appliance.config import ServedModel

__all__ = ["Batcher", "caller", "check_batching", "unbatchable_backend"]

# (input name, dtype, dimensions after the batch one) per input, then the outputs asked for (None: all).
Signature = tuple[tuple[tuple[str, str, tuple[int, ...]], ...], tuple[str, ...] | None]


def check_batching(config: ServedModel, manifest: Manifest) -> None:
    """Raise ValueError, naming the model, when the entry asks for batching its model cannot do."""
    if config.batch is None:
        return
    fixed = [t.name for t in manifest.inputs if not t.dynamic_batch]
    if fixed:
        raise ValueError(
            f"model {config.served_id!r} ({manifest.name}) cannot batch: its input {fixed[0]!r} has a fixed batch "
            f"dimension of 1 (the manifest does not declare dynamic_batch); remove `batch` from its [[models]] entry"
        )


def unbatchable_backend(backend_name: str) -> str | None:
    """Why the backend the ladder chose cannot take stacked inputs (None: it can).

    TensorRT engines (ours and onnxruntime's TensorRT provider) are built for the manifest's shape profiles,
    which are those of one request (batch 1): a stacked input would be refused.
    """
    if "tensorrt" in backend_name:
        return f"{backend_name} engines are built for one request at a time (the manifest's batch-1 profiles)"
    return None


def caller(batcher: Batcher | None) -> AbstractContextManager[None]:
    """The span in which a request may call the model (a no-op without a batcher); see :meth:`Batcher.caller`."""
    return nullcontext() if batcher is None else batcher.caller()


@dataclass(eq=False)
class _Batch:
    signature: Signature
    deadline: float
    feeds: list[Mapping[str, np.ndarray]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    closed: bool = False  # no one joins any more (full, or started)
    done: threading.Event = field(default_factory=threading.Event)
    results: list[list[np.ndarray]] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def total_rows(self) -> int:
        return sum(self.rows)


class Batcher:
    """A backend that runs concurrent calls of the same signature as one stacked call (see the module's text)."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_size: int,
        max_wait_s: float,
        max_running: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """``max_running``: graph calls at once; ``on_batch(rows)`` is called once per graph call (metrics)."""
        if max_size < 1 or max_running < 1:
            raise ValueError("max_size and max_running must be at least 1")
        self.backend, self.max_size, self.max_wait_s = backend, max_size, max_wait_s
        self.max_running, self.on_batch = max_running, on_batch
        self._lock = threading.Condition()
        self._open: dict[Signature, _Batch] = {}  # by signature: the batch a request of that signature joins
        self._pending: list[_Batch] = []  # every batch not started yet, oldest first
        self._running = 0  # graph calls in progress
        self._callers = 0  # requests inside caller(): they may still call run
        self._waiting = 0  # requests in batches not started yet

    # --- the Backend interface ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def input_names(self) -> Sequence[str]:
        return self.backend.input_names

    @property
    def output_names(self) -> Sequence[str]:
        return self.backend.output_names

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        """Run ``feeds`` as part of a batch; returns exactly what the backend would return for them alone."""
        rows = _rows(feeds)
        signature: Signature = (
            tuple(sorted((name, array.dtype.str, tuple(array.shape[1:])) for name, array in feeds.items())),
            tuple(outputs) if outputs else None,
        )
        with self._lock:
            batch = self._open.get(signature)
            if rows is None or rows >= self.max_size:  # too big to share (or no common batch dimension)
                batch = None
            elif batch is not None and batch.total_rows + rows > self.max_size:
                self._close(batch)  # full for this request, which starts the next one
                batch = None
            leader = batch is None
            if batch is None:
                batch = _Batch(signature, deadline=time.monotonic() + self.max_wait_s)
                self._pending.append(batch)
                if rows is not None and rows < self.max_size:
                    self._open[signature] = batch
                else:
                    batch.closed = True
            index = len(batch.feeds)
            batch.feeds.append(feeds)
            batch.rows.append(rows or 1)
            self._waiting += 1
            if batch.total_rows >= self.max_size:
                self._close(batch)
            self._lock.notify_all()  # a leader may be waiting for exactly this request
            if leader:
                self._wait_for_start(batch)
        if leader:
            self._execute(batch, outputs)
        else:
            batch.done.wait()
        if batch.error is not None:
            if leader:
                raise batch.error
            raise _copy_of(batch.error) from batch.error
        return batch.results[index]

    # --- who may still join ------------------------------------------------------------------------------

    @contextmanager
    def caller(self) -> Iterator[None]:
        """Mark a request that may call :meth:`run` until the block ends (its pipeline's ``process``).

        A batch is ready early once every such request is waiting in a batch: nobody else can join it. Calls
        from outside any caller block (the warm-up, tests) do not count, and their batches wait the full time.
        """
        with self._lock:
            self._callers += 1
        try:
            yield
        finally:
            with self._lock:
                self._callers -= 1
                self._lock.notify_all()

    # --- internals (the lock is held where it says so) ---------------------------------------------------

    def _close(self, batch: _Batch) -> None:
        """Lock held: no one joins ``batch`` any more."""
        batch.closed = True
        if self._open.get(batch.signature) is batch:
            del self._open[batch.signature]

    def _ready(self, batch: _Batch, now: float) -> bool:
        """Lock held: full, late, or nobody else can join it."""
        everyone_here = 0 < self._callers <= self._waiting
        return batch.total_rows >= self.max_size or now >= batch.deadline or everyone_here or batch.closed

    def _wait_for_start(self, batch: _Batch) -> None:
        """Lock held: the leader waits until its batch is ready, a graph-call slot is free, and no older batch is
        ready for that slot; then it takes the slot and the batch leaves the pending list."""
        while True:
            now = time.monotonic()
            if self._running < self.max_running:
                first_ready = next((b for b in self._pending if self._ready(b, now)), None)
                if first_ready is batch:
                    break
            wake_in = batch.deadline - now if not self._ready(batch, now) else None
            self._lock.wait(wake_in)  # woken by a join, a caller leaving, or a slot freed
        self._close(batch)
        self._pending.remove(batch)
        self._waiting -= len(batch.feeds)
        self._running += 1
        self._lock.notify_all()  # with more than one slot, the next ready batch may start too

    def _execute(self, batch: _Batch, outputs: Sequence[str] | None) -> None:
        """The leader, lock released: one graph call for the whole batch, then free the slot, wake the others."""
        try:
            if len(batch.feeds) == 1:
                batch.results = [self.backend.run(batch.feeds[0], outputs)]
                self._observe(batch.total_rows)
            else:
                batch.results = self._run_stacked(batch, outputs)
        except BaseException as exc:  # every request of the batch answers with it, then the next batch starts
            batch.error = exc
        finally:
            with self._lock:
                self._running -= 1
                self._lock.notify_all()
            batch.done.set()

    def _run_stacked(self, batch: _Batch, outputs: Sequence[str] | None) -> list[list[np.ndarray]]:
        names = batch.feeds[0].keys()
        stacked = {name: np.concatenate([feeds[name] for feeds in batch.feeds]) for name in names}
        total = batch.total_rows
        results = self.backend.run(stacked, outputs)
        self._observe(total)
        for array in results:
            if array.ndim == 0 or array.shape[0] != total:
                raise BackendError(
                    f"batched inference returned an output of shape {array.shape} for a batch of {total}: "
                    "the model does not keep the batch dimension"
                )
        starts = itertools.accumulate(batch.rows, initial=0)
        return [[array[start:end] for array in results] for start, end in itertools.pairwise(starts)]

    def _observe(self, rows: int) -> None:
        if self.on_batch is not None:
            self.on_batch(rows)


def _rows(feeds: Mapping[str, np.ndarray]) -> int | None:
    """The batch dimension all inputs share; None when they do not (such a call runs alone)."""
    sizes = {array.shape[0] if array.ndim else None for array in feeds.values()}
    if len(sizes) != 1:
        return None
    (rows,) = sizes
    return rows if rows else None


def _copy_of(error: BaseException) -> BaseException:
    """A copy of the batch's error for one more request (an exception object is raised by one thread only)."""
    try:
        clone = copy.copy(error)
    except Exception:  # an exception type that cannot be copied: the message still reaches the client
        clone = BackendError(str(error))
    return clone.with_traceback(None)
