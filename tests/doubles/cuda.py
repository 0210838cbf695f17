"""A double of a CUDA GPU as polygraphy's CUDA wrapper (``polygraphy.cuda``) exposes it. Not CUDA.

Why a double: no GPU exists on CI machines, and polygraphy's wrapper needs libcudart and a driver. The TensorRT
backend reaches CUDA only through ``polygraphy.cuda`` (``Stream``, ``DeviceArray``, ``DeviceView`` and
``wrapper().handle``, the ctypes handle to libcudart it uses for CUDA graphs), so that module is what is replaced
(``sys.modules["polygraphy.cuda"]``), with polygraphy's own names, signatures and checks:

- device memory is host ``bytearray`` s behind fake, never-reused pointers; ``DeviceArray(shape, dtype)``
  allocates ``volume × itemsize`` bytes, ``resize`` reallocates only when growing, ``copy_from`` /
  ``copy_to`` (host ↔ device, optional ``stream``) refuse a non-contiguous host buffer, a dtype mismatch and a
  size overflow as polygraphy does (it raises ``PolygraphyException`` through ``G_LOGGER.critical``);
- a stream runs its work in order, at once (every stream is "synchronised" the moment work is enqueued), except
  while captured: then work is recorded into the graph, as ``cudaStreamBeginCapture`` does; a pageable-memory
  copy on a capturing stream fails (cudaErrorStreamCaptureUnsupported, 900), as it does in CUDA;
- ``wrapper().handle`` takes ctypes arguments as libcudart does (``c_void_p`` handles, ``ctypes.pointer`` for
  out-parameters) and returns ``cudaError_t`` codes.

It records what the tests check: allocations, which stream each operation ran on, captures and launches.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import itertools
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from polygraphy.datatype import DataType
from polygraphy.exception import PolygraphyException

__all__ = ["FakeGpu", "polygraphy_cuda_module"]

CUDA_RUNTIME_VERSION = 12080  # what cudaRuntimeGetVersion reports for the CUDA 12.8 runtime
_CAPTURE_UNSUPPORTED = 900  # cudaErrorStreamCaptureUnsupported
_INVALID_VALUE = 1  # cudaErrorInvalidValue


@dataclass
class FakeGpu:
    """Device memory, streams and graphs of one pretend GPU, with a record of what was done on it."""

    memory: dict[int, bytearray] = field(default_factory=dict)
    streams: set[int] = field(default_factory=set)
    capturing: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    graphs: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    executables: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    mallocs: int = 0
    frees: int = 0
    launches: list[int] = field(default_factory=list)  # stream of each graph launch
    ops: list[tuple[str, int, int]] = field(default_factory=list)  # (kind, stream, device pointer)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count(0x10_0000, 0x100))  # streams, graphs
    _next_ptr: int = 0x7F00_0000_0000  # device memory: a bump allocator, never reusing an address

    def new_id(self) -> int:
        with self.lock:
            return int(next(self._ids))

    def malloc(self, nbytes: int) -> int:
        with self.lock:
            ptr = self._next_ptr
            self._next_ptr += (max(nbytes, 1) + 0xFFF) // 0x1000 * 0x1000 + 0x1000  # 4 KiB aligned, with a gap
            self.memory[ptr] = bytearray(nbytes)
            self.mallocs += 1
        return ptr

    def free(self, ptr: int) -> None:
        if ptr == 0:
            return  # cudaFree(NULL) is a no-op
        with self.lock:
            del self.memory[ptr]  # a double free is a KeyError: the tests see it
            self.frees += 1

    def region(self, ptr: int, nbytes: int) -> memoryview:
        """The ``nbytes`` at device pointer ``ptr``; an access past its allocation is an error (not a crash)."""
        with self.lock:
            blocks = list(self.memory.items())
        for base, block in blocks:
            if base <= ptr < base + max(len(block), 1):
                if ptr - base + nbytes > len(block):
                    raise PolygraphyException(f"illegal address: {nbytes} bytes at {ptr:#x} overrun the allocation")
                return memoryview(block)[ptr - base : ptr - base + nbytes]
        raise PolygraphyException(f"illegal address {ptr:#x}: not allocated")

    def enqueue(self, stream: int | None, kind: str, ptr: int, work: Callable[[], None]) -> None:
        """Run ``work`` in stream order (at once), or record it while ``stream`` is being captured."""
        with self.lock:
            self.ops.append((kind, stream or 0, ptr))
            captured = self.capturing.get(stream) if stream else None
        if captured is not None:
            captured.append(work)
        else:
            work()


def _check_host(host: np.ndarray, dtype: DataType) -> None:
    if not host.flags["C_CONTIGUOUS"]:
        raise PolygraphyException("Provided host buffer is not contiguous in memory.")
    if DataType.from_dtype(host.dtype) != dtype:
        raise PolygraphyException(f"Host buffer type: {host.dtype} does not match the device buffer's {dtype}")


def polygraphy_cuda_module(gpu: FakeGpu) -> types.ModuleType:
    """``polygraphy.cuda`` on ``gpu``: Stream, DeviceView, DeviceArray, wrapper()."""
    module = types.ModuleType("polygraphy.cuda")
    module.__spec__ = importlib.machinery.ModuleSpec("polygraphy.cuda", loader=None)

    class Stream:
        def __init__(self) -> None:
            self.ptr = gpu.new_id()
            gpu.streams.add(self.ptr)
            self.synchronized = 0

        def free(self) -> None:
            gpu.streams.discard(self.ptr)

        def synchronize(self) -> None:
            if self.ptr in gpu.capturing:
                raise PolygraphyException("CUDA Error: 900 (synchronising a capturing stream)")
            self.synchronized += 1

    def stream_ptr(stream: Stream | None) -> int | None:
        return None if stream is None else stream.ptr

    def copy_allowed(stream: Stream | None) -> None:
        if stream is not None and stream.ptr in gpu.capturing:
            raise PolygraphyException(f"CUDA Error: {_CAPTURE_UNSUPPORTED}")

    class DeviceView:
        def __init__(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> None:
            self.ptr = int(ptr)
            self.shape = tuple(shape)
            self._dtype = DataType.from_dtype(dtype)
            self.itemsize = self._dtype.itemsize

        @property
        def nbytes(self) -> int:
            return int(np.prod(self.shape, dtype=np.int64)) * self.itemsize

        def copy_to(self, host_buffer: np.ndarray, stream: Stream | None = None) -> np.ndarray:
            if not self.nbytes:
                return host_buffer
            _check_host(host_buffer, self._dtype)
            if host_buffer.nbytes < self.nbytes:
                raise PolygraphyException("Provided host buffer is smaller than device buffer.")
            copy_allowed(stream)
            nbytes, ptr = self.nbytes, self.ptr

            def work() -> None:
                host_buffer.reshape(-1).view(np.uint8)[:nbytes] = np.frombuffer(gpu.region(ptr, nbytes), np.uint8)

            gpu.enqueue(stream_ptr(stream), "copy_to", ptr, work)
            return host_buffer

    class DeviceArray(DeviceView):
        def __init__(self, shape: tuple[int, ...] | None = None, dtype: Any = None) -> None:
            super().__init__(0, shape or (), dtype if dtype is not None else DataType.FLOAT32)
            self.allocated_nbytes = 0
            self.resize(self.shape)

        def resize(self, shape: tuple[int, ...]) -> DeviceArray:
            nbytes = int(np.prod(shape, dtype=np.int64)) * self.itemsize
            if nbytes > self.allocated_nbytes:
                self.free()
                self.ptr = gpu.malloc(nbytes)
                self.allocated_nbytes = nbytes
            self.shape = tuple(shape)
            return self

        def free(self) -> None:
            gpu.free(self.ptr)
            self.shape = ()
            self.allocated_nbytes = 0
            self.ptr = 0

        def copy_from(self, host_buffer: np.ndarray, stream: Stream | None = None) -> DeviceArray:
            if not host_buffer.nbytes:
                return self
            _check_host(host_buffer, self._dtype)
            if host_buffer.nbytes > self.nbytes:
                raise PolygraphyException("Provided host buffer is larger than device buffer.")
            copy_allowed(stream)
            data, ptr = host_buffer.tobytes(), self.ptr

            def work() -> None:
                gpu.region(ptr, len(data))[:] = data

            gpu.enqueue(stream_ptr(stream), "copy_from", ptr, work)
            return self

        def view(self, shape: tuple[int, ...] | None = None, dtype: Any = None) -> DeviceView:
            view = DeviceView(self.ptr, shape if shape is not None else self.shape, dtype or self._dtype)
            if view.nbytes > self.nbytes:
                raise PolygraphyException("A view cannot exceed the number of bytes of the original array.")
            return view

    class Cudart:
        """libcudart's graph and version calls, taking ctypes arguments as the real library does."""

        @staticmethod
        def cudaRuntimeGetVersion(version: Any) -> int:
            version.contents.value = CUDA_RUNTIME_VERSION
            return 0

        @staticmethod
        def cudaStreamBeginCapture(stream: ctypes.c_void_p, mode: ctypes.c_int) -> int:
            if not isinstance(stream, ctypes.c_void_p) or not isinstance(mode, ctypes.c_int):
                return _INVALID_VALUE
            if stream.value not in gpu.streams or stream.value in gpu.capturing:
                return _INVALID_VALUE
            gpu.capturing[stream.value] = []
            return 0

        @staticmethod
        def cudaStreamEndCapture(stream: ctypes.c_void_p, graph: Any) -> int:
            if not isinstance(stream, ctypes.c_void_p) or stream.value not in gpu.capturing:
                return _INVALID_VALUE
            work = gpu.capturing.pop(stream.value)
            graph_id = gpu.new_id()
            gpu.graphs[graph_id] = work
            graph.contents.value = graph_id
            return 0

        @staticmethod
        def cudaGraphInstantiate(executable: Any, graph: ctypes.c_void_p, flags: ctypes.c_ulonglong) -> int:
            if not isinstance(graph, ctypes.c_void_p) or graph.value not in gpu.graphs:
                return _INVALID_VALUE
            if not isinstance(flags, ctypes.c_ulonglong):
                return _INVALID_VALUE
            exec_id = gpu.new_id()
            gpu.executables[exec_id] = list(gpu.graphs[graph.value])
            executable.contents.value = exec_id
            return 0

        @staticmethod
        def cudaGraphLaunch(executable: ctypes.c_void_p, stream: ctypes.c_void_p) -> int:
            if not isinstance(executable, ctypes.c_void_p) or executable.value not in gpu.executables:
                return _INVALID_VALUE
            if not isinstance(stream, ctypes.c_void_p) or stream.value not in gpu.streams:
                return _INVALID_VALUE
            gpu.launches.append(stream.value)
            for work in gpu.executables[executable.value]:
                work()
            return 0

        @staticmethod
        def cudaGraphDestroy(graph: ctypes.c_void_p) -> int:
            return 0 if gpu.graphs.pop(graph.value or 0, None) is not None else _INVALID_VALUE

        @staticmethod
        def cudaGraphExecDestroy(executable: ctypes.c_void_p) -> int:
            return 0 if gpu.executables.pop(executable.value or 0, None) is not None else _INVALID_VALUE

    wrapper = types.SimpleNamespace(handle=Cudart())
    module.Stream = Stream  # type: ignore[attr-defined]
    module.DeviceView = DeviceView  # type: ignore[attr-defined]
    module.DeviceArray = DeviceArray  # type: ignore[attr-defined]
    module.wrapper = lambda: wrapper  # type: ignore[attr-defined]
    return module
