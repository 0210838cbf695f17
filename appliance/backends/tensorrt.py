"""A TensorRT engine as a :class:`~appliance.backends.base.Backend`.

The engine's bytes come from the engine cache, already checked against this host (record and sha256:
``EngineCache.verified_bytes``); this module only deserialises and runs them.

- **Slots.** One slot per in-flight inference (the model's ``capacity``). Each slot owns an execution context,
  a CUDA stream and one device buffer per input and output, allocated once at the profile's maximum shape and
  reused for every request; slots share nothing but the engine. A call takes a free slot and gives it back.
- **Shapes.** Every input's shape is checked against the engine's optimisation profile before a slot is taken;
  a shape outside it raises :class:`BackendInputError` (the client's request, not the model, is at fault) with
  the accepted range in the message.
- **CUDA graphs, only where the engine's input shapes are static** (min = max in the profile): a dynamic-shape
  engine would need a graph per shape, and TensorRT re-plans on every shape change, so those run
  ``execute_async_v3`` directly. TensorRT-RTX captures and replays graphs itself
  (``IRuntimeConfig.cuda_graph_strategy = WHOLE_GRAPH_CAPTURE``). With TensorRT 10 a slot enqueues once (TensorRT
  asks for one enqueue after any shape or address change before capture), captures its second enqueue on its
  own stream, and launches that graph from then on; if capture fails the slot runs ``execute_async_v3`` for good.
- **Imports.** ``tensorrt`` (TensorRT 10) or ``tensorrt_rtx`` (same Python API) and ``polygraphy.cuda`` (CUDA
  memory and streams through libcudart) are imported when a backend is created, never at module import, so a
  CPU-only install never loads them.

None of this has run on a GPU in this project's CI (none there): it is tested against doubles of TensorRT and
polygraphy's CUDA wrapper (tests/doubles/), and ``bench/gpu_check.sh`` is the check for a real GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import structlog

from appliance.backends.base import BackendError, BackendInputError

__all__ = ["MODULES", "TensorRTBackend"]

log = structlog.get_logger("appliance.backends.tensorrt")

# The Python module of each TensorRT flavour (engines/builder.py names the flavours).
MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}

_CAPTURE_THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal: other slots' threads keep calling CUDA meanwhile
_GRAPH_API_MIN_RUNTIME = 12000  # cudaGraphInstantiate(exec*, graph, flags) is CUDA 12's signature
_ERROR = 1  # ILogger.Severity.ERROR; INTERNAL_ERROR is 0


def _fmt(shape: Sequence[int]) -> str:
    return "×".join(str(d) for d in shape)


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: np.dtype[Any]
    is_input: bool
    min: tuple[int, ...] = ()  # the optimisation profile, inputs only
    max: tuple[int, ...] = ()


class _ErrorLog:
    """Collects TensorRT's error messages per thread: TensorRT logs from the thread that made the failing call,
    so a slot's error is never mistaken for another's."""

    def __init__(self) -> None:
        self._local = threading.local()

    def record(self, severity: int, message: str) -> None:
        if severity <= _ERROR:
            if not getattr(self._local, "last", ""):  # the first error of a failing call names the cause
                self._local.last = message
            log.warning("tensorrt error", message=message[:500])
        else:
            log.debug("tensorrt", message=message[:500])

    def clear(self) -> None:
        self._local.last = ""

    def take(self) -> str:
        last: str = getattr(self._local, "last", "") or "TensorRT gave no reason"
        self._local.last = ""
        return last.splitlines()[0][:300]


def _logger(trt: ModuleType, errors: _ErrorLog) -> Any:
    """A ``trt.ILogger`` that hands every message to ``errors`` (TensorRT needs an ILogger subclass instance)."""

    class Logger(trt.ILogger):  # type: ignore[misc, name-defined]  # trt is imported at run time
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            errors.record(int(severity), msg)

    return Logger()


def _check_cuda(status: int, call: str) -> None:
    if status != 0:
        raise BackendError(f"{call} failed (cudaError {status})")


class _CudaGraph:
    """One captured ``execute_async_v3`` of one slot (TensorRT 10, static shapes), replayed on that slot's stream.

    Through the libcudart polygraphy loaded (``polygraphy.cuda.wrapper().handle``), so memory, streams and graphs
    share one CUDA runtime. Out-parameters are passed as ``ctypes.pointer`` to a ``c_void_p``.
    """

    def __init__(self, cudart: Any, executable: ctypes.c_void_p) -> None:
        self._cudart, self._exec = cudart, executable

    @classmethod
    def capture(cls, cudart: Any, stream_ptr: int, enqueue: Callable[[], bool]) -> _CudaGraph:
        stream = ctypes.c_void_p(stream_ptr)
        _check_cuda(
            cudart.cudaStreamBeginCapture(stream, ctypes.c_int(_CAPTURE_THREAD_LOCAL)), "cudaStreamBeginCapture"
        )
        graph = ctypes.c_void_p()
        try:
            enqueued = enqueue()
        finally:  # always leave capture mode, or the stream stays unusable
            ended = cudart.cudaStreamEndCapture(stream, ctypes.pointer(graph))
        try:
            if not enqueued:
                raise BackendError("execute_async_v3 failed while being captured")
            _check_cuda(ended, "cudaStreamEndCapture")
            executable = ctypes.c_void_p()
            _check_cuda(
                cudart.cudaGraphInstantiate(ctypes.pointer(executable), graph, ctypes.c_ulonglong(0)),
                "cudaGraphInstantiate",
            )
        finally:
            if graph.value:  # the executable graph does not need the graph it was made from
                cudart.cudaGraphDestroy(graph)
        return cls(cudart, executable)

    def launch(self, stream_ptr: int) -> None:
        _check_cuda(self._cudart.cudaGraphLaunch(self._exec, ctypes.c_void_p(stream_ptr)), "cudaGraphLaunch")

    def destroy(self) -> None:
        self._cudart.cudaGraphExecDestroy(self._exec)


class _Slot:
    """Everything one in-flight inference uses; never shared with another slot."""

    def __init__(self, index: int, context: Any, stream: Any) -> None:
        self.index = index
        self.context = context
        self.stream = stream
        self.buffers: dict[str, Any] = {}  # tensor name → polygraphy DeviceArray at the profile's max shape
        self.capacity_bytes: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # input shapes the context was last given
        # CUDA graph state (TensorRT 10 only): "warm-up" → "capture" → "ready", or "off" (never / capture failed)
        self.graph_state = "off"
        self.graph: _CudaGraph | None = None


class TensorRTBackend:
    """A deserialised TensorRT engine with ``capacity`` slots. Thread-safe: each call runs in a slot of its own."""

    def __init__(self, engine_bytes: bytes, *, flavour: str, capacity: int, label: str = "engine") -> None:
        if flavour not in MODULES:
            raise BackendError(f"unknown TensorRT flavour {flavour!r}")
        if capacity < 1:
            raise BackendError(f"capacity must be at least 1, not {capacity}")
        self._flavour = flavour
        self._label = label
        self._trt = importlib.import_module(MODULES[flavour])
        self._cuda = importlib.import_module("polygraphy.cuda")
        self._datatype = importlib.import_module("polygraphy.datatype").DataType
        self._errors = _ErrorLog()
        self._runtime = self._trt.Runtime(_logger(self._trt, self._errors))
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise BackendError(f"TensorRT could not deserialize {label}: {self._errors.take()}")
        self._tensors = self._describe()
        self._inputs = [t for t in self._tensors.values() if t.is_input]
        self._outputs = [t for t in self._tensors.values() if not t.is_input]
        self.static_shapes = all(t.min == t.max for t in self._inputs)
        self._slots: list[_Slot] = []
        self._free: queue.LifoQueue[_Slot] = queue.LifoQueue()  # the hottest slot first: its graph, its caches
        self._cudart: Any = None
        try:
            self.graphs = self._graph_mode()
            contexts = [self._context() for _ in range(capacity)]
            output_max = self._output_max_shapes(contexts[0])
            for index, context in enumerate(contexts):
                self._add_slot(index, context, output_max)
        except BaseException:
            self.close()
            raise
        for slot in self._slots:
            self._free.put(slot)

    # --- set-up ---------------------------------------------------------------------------------------------

    def _describe(self) -> dict[str, _Tensor]:
        trt, engine = self._trt, self._engine
        tensors = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                low, _, high = engine.get_tensor_profile_shape(name, 0)
                tensors[name] = _Tensor(name, dtype, True, tuple(low), tuple(high))
            else:
                tensors[name] = _Tensor(name, dtype, False)
        return tensors

    def _graph_mode(self) -> str:
        """How this engine uses CUDA graphs, in words (logged, and shown by the ``graphs`` attribute)."""
        if not self.static_shapes:
            return "off: the engine's input shapes are dynamic"
        if self._flavour == "tensorrt-rtx":
            return "TensorRT-RTX whole-graph capture"
        cudart = self._cuda.wrapper().handle
        version = ctypes.c_int(0)
        if cudart.cudaRuntimeGetVersion(ctypes.pointer(version)) != 0 or version.value < _GRAPH_API_MIN_RUNTIME:
            return f"off: CUDA runtime {version.value} is older than 12.0"
        self._cudart = cudart
        return "captured per slot after one enqueue"

    def _context(self) -> Any:
        if self._flavour == "tensorrt-rtx":
            config = self._engine.create_runtime_config()
            if self.static_shapes:
                config.cuda_graph_strategy = self._trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            context = self._engine.create_execution_context(config)
        else:
            context = self._engine.create_execution_context()
        if context is None:
            raise BackendError(
                f"TensorRT could not create an execution context for {self._label}: {self._errors.take()}"
            )
        return context

    def _set_input_shapes(self, context: Any, pick: Callable[[_Tensor], tuple[int, ...]]) -> None:
        for tensor in self._inputs:
            if not context.set_input_shape(tensor.name, pick(tensor)):
                raise BackendError(
                    f"TensorRT refused shape {_fmt(pick(tensor))} for {tensor.name!r}: {self._errors.take()}"
                )

    def _output_max_shapes(self, context: Any) -> dict[str, tuple[int, ...]]:
        """Each output's largest shape over the profile's min and max (what its buffer must hold)."""
        largest: dict[str, tuple[int, ...]] = {}
        for pick in (lambda t: t.min, lambda t: t.max):
            self._set_input_shapes(context, pick)
            for tensor in self._outputs:
                shape = tuple(context.get_tensor_shape(tensor.name))
                if any(d < 0 for d in shape):
                    raise BackendError(
                        f"output {tensor.name!r} has a data-dependent shape ({_fmt(shape)}): unsupported"
                    )
                previous = largest.get(tensor.name, shape)
                largest[tensor.name] = tuple(max(a, b) for a, b in zip(previous, shape, strict=True))
        return largest

    def _add_slot(self, index: int, context: Any, output_max: Mapping[str, tuple[int, ...]]) -> None:
        slot = _Slot(index, context, self._cuda.Stream())
        self._slots.append(slot)  # from here on close() frees what this slot holds, even if set-up fails below
        for tensor in self._tensors.values():
            shape = tensor.max if tensor.is_input else output_max[tensor.name]
            buffer = self._cuda.DeviceArray(shape=shape, dtype=self._datatype.from_dtype(tensor.dtype))
            slot.buffers[tensor.name] = buffer
            slot.capacity_bytes[tensor.name] = int(np.prod(shape, dtype=np.int64)) * tensor.dtype.itemsize
            if not context.set_tensor_address(tensor.name, buffer.ptr):
                raise BackendError(f"TensorRT refused the address of {tensor.name!r}: {self._errors.take()}")
        if self._cudart is not None:
            slot.graph_state = "warm-up"

    # --- the Backend interface ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._flavour

    @property
    def input_names(self) -> Sequence[str]:
        return [t.name for t in self._inputs]

    @property
    def output_names(self) -> Sequence[str]:
        return [t.name for t in self._outputs]

    @property
    def profiles(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """Each input's (min, max) shape: the shapes this engine accepts."""
        return {t.name: (t.min, t.max) for t in self._inputs}

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        hosts = self._checked_feeds(feeds)
        wanted = list(outputs) if outputs else self.output_names
        unknown = [name for name in wanted if name not in self._tensors or self._tensors[name].is_input]
        if unknown:
            raise BackendError(f"the engine has no output {', '.join(map(repr, unknown))}")
        slot = self._free.get()  # at most `capacity` callers at once: the server's limiter sees to that
        try:
            return self._run(slot, hosts, wanted)
        finally:
            self._free.put(slot)

    def _checked_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [t.name for t in self._inputs if t.name not in feeds]
        extra = [name for name in feeds if name not in self._tensors or not self._tensors[name].is_input]
        if missing or extra:
            raise BackendError(f"the engine takes inputs {self.input_names}; missing {missing}, unknown {extra}")
        hosts = {}
        for tensor in self._inputs:
            array = np.asarray(feeds[tensor.name])
            shape = tuple(array.shape)
            if len(shape) != len(tensor.min) or not all(
                low <= d <= high for d, low, high in zip(shape, tensor.min, tensor.max, strict=True)
            ):
                raise BackendInputError(
                    f"input {tensor.name!r} of shape {_fmt(shape)} is outside what this model's TensorRT engine "
                    f"accepts: {_fmt(tensor.min)} to {_fmt(tensor.max)}"
                )
            hosts[tensor.name] = np.ascontiguousarray(array, dtype=tensor.dtype)
        return hosts

    def _run(self, slot: _Slot, hosts: Mapping[str, np.ndarray], wanted: Sequence[str]) -> list[np.ndarray]:
        context, stream = slot.context, slot.stream
        self._errors.clear()  # an error reported below is this call's own
        for name, host in hosts.items():
            if slot.shapes.get(name) != host.shape:
                if not context.set_input_shape(name, host.shape):
                    raise BackendInputError(
                        f"TensorRT refused shape {_fmt(host.shape)} for {name!r}: {self._errors.take()}"
                    )
                slot.shapes[name] = host.shape
            slot.buffers[name].copy_from(host, stream)
        shapes = {}
        for name in wanted:
            shape = tuple(context.get_tensor_shape(name))
            tensor = self._tensors[name]
            if (
                any(d < 0 for d in shape)
                or int(np.prod(shape, dtype=np.int64)) * tensor.dtype.itemsize > (slot.capacity_bytes[name])
            ):
                raise BackendError(f"output {name!r} would be {_fmt(shape)}, more than its buffer holds")
            shapes[name] = shape
        self._enqueue(slot)
        results = []
        for name in wanted:
            host = np.empty(shapes[name], dtype=self._tensors[name].dtype)
            slot.buffers[name].view(shape=shapes[name]).copy_to(host, stream)
            results.append(host)
        stream.synchronize()
        return results

    def _execute(self, slot: _Slot) -> bool:
        return bool(slot.context.execute_async_v3(slot.stream.ptr))

    def _enqueue(self, slot: _Slot) -> None:
        if slot.graph_state == "ready" and slot.graph is not None:
            slot.graph.launch(slot.stream.ptr)
            return
        if slot.graph_state == "capture":
            try:
                slot.graph = _CudaGraph.capture(self._cudart, slot.stream.ptr, lambda: self._execute(slot))
            except Exception as exc:  # any capture failure: this slot runs without a graph from now on
                slot.graph_state = "off"
                log.warning(
                    "CUDA graph capture failed; running without", engine=self._label, slot=slot.index, error=str(exc)
                )
            else:
                slot.graph_state = "ready"
                slot.graph.launch(slot.stream.ptr)
                return
        if not self._execute(slot):
            raise BackendError(f"TensorRT execute_async_v3 failed: {self._errors.take()}")
        if slot.graph_state == "warm-up":
            slot.graph_state = "capture"

    def close(self) -> None:
        """Free every slot's graph, buffers and stream, then the contexts, the engine and the runtime."""
        while True:
            try:
                self._free.get_nowait()
            except queue.Empty:
                break
        for slot in self._slots:
            if slot.graph is not None:
                slot.graph.destroy()
                slot.graph = None
            for buffer in slot.buffers.values():
                with contextlib.suppress(Exception):
                    buffer.free()
            with contextlib.suppress(Exception):
                slot.stream.free()
            slot.buffers.clear()
            slot.context = None
        self._slots = []
        self._engine = None
        self._runtime = None
