"""A double of TensorRT's Python runtime API (``tensorrt`` 10 and ``tensorrt_rtx`` 1.x share it). Not TensorRT.

Why a double: deserialising and running an engine needs a GPU. On CI machines the real TensorRT-RTX builds
engines but fails to load them (``deserialize_cuda_engine`` logs "cudaError 35" and returns None; the ladder tests
show that with the real library). This double replaces the module (``sys.modules["tensorrt_rtx"]`` or
``["tensorrt"]``) with the slice the TensorRT backend uses, under TensorRT's names and semantics:

- ``Runtime(logger)`` needs an ``ILogger`` instance; ``deserialize_cuda_engine(buffer)`` returns an ``ICudaEngine``,
  or logs an error and returns None for bytes it does not know, as TensorRT does for a foreign or corrupt engine.
  An engine *is* the ONNX model it was built from plus its optimisation profile: tests register real engine bytes
  (built by TensorRT-RTX) with that ONNX file and profile (:class:`EngineSpec`), and running the engine runs that
  ONNX file through onnxruntime's CPU provider, so outputs are real numbers from the real model.
- ``ICudaEngine``: ``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``, ``get_tensor_dtype``,
  ``get_tensor_shape`` (-1 for a dimension that varies within the profile), ``get_tensor_profile_shape(name, 0)``
  (``[min, opt, max]``), ``num_optimization_profiles``, ``create_execution_context()``; TensorRT-RTX adds
  ``create_runtime_config()`` (an ``IRuntimeConfig`` with ``cuda_graph_strategy``) and
  ``create_execution_context(runtime_config)``.
- ``IExecutionContext``: ``set_input_shape`` (False, and an error logged, outside the profile), ``get_tensor_shape``
  (outputs follow from the inputs' shapes; -1 while an input's shape is unset), ``set_tensor_address``,
  ``execute_async_v3(stream)`` (False, and an error logged, when a shape or an address is missing; otherwise the
  work is enqueued on the CUDA double's stream: it runs in stream order, or is recorded into a graph while the
  stream is being captured).

What it records for the tests: every context, and per context each execution's stream and tensor addresses.
"""

from __future__ import annotations

import enum
import hashlib
import importlib.machinery
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from onnxruntime import InferenceSession as _RealSession  # bound at import: tests may replace onnxruntime's

from tests.doubles.cuda import FakeGpu

__all__ = ["EngineSpec", "TensorRTDouble"]

VERSIONS = {"tensorrt": "10.13.3.9", "tensorrt-rtx": "1.7.1.116"}
MODULE_NAMES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class EngineSpec:
    """What an engine was built from: the ONNX file and each input's (min, opt, max) profile.

    ``output_shapes`` maps input shapes to output shapes, as TensorRT knows them from the network without running
    it; without it the double runs the model on zeros to find out (slow for large shapes on a CPU). Whatever it
    says is checked against the shapes the model really produces.
    """

    onnx: Path
    profiles: dict[str, tuple[Shape, Shape, Shape]]
    output_shapes: Callable[[dict[str, Shape]], dict[str, Shape]] | None = field(default=None, compare=False)


class Severity(enum.IntEnum):  # ILogger.Severity
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


_NUMPY = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.UINT8: np.uint8,
    DataType.INT64: np.int64,
}
_ONNX_TYPES = {"tensor(float)": DataType.FLOAT, "tensor(float16)": DataType.HALF, "tensor(int64)": DataType.INT64}


class CudaGraphStrategy(enum.IntEnum):  # TensorRT-RTX only
    DISABLED = 0
    WHOLE_GRAPH_CAPTURE = 1


class _Model:
    """The ONNX model behind an engine, run on onnxruntime's CPU provider (one per spec, shared by the tests)."""

    _loaded: ClassVar[dict[tuple[Path, str], _Model]] = {}

    @classmethod
    def of(cls, spec: EngineSpec) -> _Model:
        key = (spec.onnx, repr(spec.profiles))
        if key not in cls._loaded or cls._loaded[key].spec.output_shapes is not spec.output_shapes:
            cls._loaded[key] = cls(spec)
        return cls._loaded[key]

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.session = _RealSession(str(spec.onnx), providers=["CPUExecutionProvider"])
        self.inputs = {i.name: _ONNX_TYPES[i.type] for i in self.session.get_inputs()}
        self.outputs = {o.name: _ONNX_TYPES[o.type] for o in self.session.get_outputs()}
        self._shapes: dict[tuple[Shape, ...], dict[str, Shape]] = {}
        self._lock = threading.Lock()

    def output_shapes(self, inputs: dict[str, Shape]) -> dict[str, Shape]:
        if self.spec.output_shapes is not None:
            return self.spec.output_shapes(inputs)
        key = tuple(inputs[name] for name in self.inputs)
        with self._lock:
            if key not in self._shapes:
                feeds = {n: np.zeros(inputs[n], dtype=_NUMPY[t]) for n, t in self.inputs.items()}
                results = self.session.run(list(self.outputs), feeds)
                self._shapes[key] = {n: tuple(r.shape) for n, r in zip(self.outputs, results, strict=True)}
            return self._shapes[key]


@dataclass
class Execution:
    stream: int
    addresses: dict[str, int]
    shapes: dict[str, Shape]


@dataclass
class TensorRTDouble:
    """One double of the ``tensorrt`` / ``tensorrt_rtx`` module on ``gpu``, knowing the engines registered."""

    gpu: FakeGpu
    flavour: str = "tensorrt-rtx"
    engines: dict[str, EngineSpec] = field(default_factory=dict)  # sha256 of the engine bytes → what it is
    contexts: list[Any] = field(default_factory=list)
    before_execute: Callable[[], None] | None = None  # a hook the tests use to hold executions together

    def register(self, engine_bytes: bytes, spec: EngineSpec) -> None:
        self.engines[hashlib.sha256(engine_bytes).hexdigest()] = spec

    @property
    def module_name(self) -> str:
        return MODULE_NAMES[self.flavour]

    def module(self) -> types.ModuleType:
        double, gpu, rtx = self, self.gpu, self.flavour == "tensorrt-rtx"
        module = types.ModuleType(self.module_name)
        module.__spec__ = importlib.machinery.ModuleSpec(self.module_name, loader=None)  # find_spec reads it

        class ILogger:
            Severity = Severity

            def __init__(self) -> None:
                pass

            def log(self, severity: Severity, msg: str) -> None:
                raise NotImplementedError

        class Runtime:
            def __init__(self, logger: ILogger) -> None:
                if not isinstance(logger, ILogger):
                    raise TypeError("Runtime(): incompatible constructor arguments (logger must be an ILogger)")
                self.logger = logger

            def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
                spec = double.engines.get(hashlib.sha256(bytes(serialized_engine)).hexdigest())
                if spec is None:
                    self.logger.log(
                        Severity.ERROR,
                        "IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion "
                        "header.magicTag == kEXPECTED_MAGIC_TAG failed.)",
                    )
                    return None
                return ICudaEngine(_Model.of(spec), self.logger)

        class IRuntimeConfig:
            def __init__(self) -> None:
                self.cuda_graph_strategy = CudaGraphStrategy.DISABLED

        class ICudaEngine:
            def __init__(self, model: _Model, logger: ILogger) -> None:
                self.model, self.logger = model, logger
                self._names = [*model.inputs, *model.outputs]
                self.num_optimization_profiles = 1
                self.num_io_tensors = len(self._names)

            def get_tensor_name(self, index: int) -> str:
                return self._names[index]

            def get_tensor_mode(self, name: str) -> TensorIOMode:
                if name in self.model.inputs:
                    return TensorIOMode.INPUT
                return TensorIOMode.OUTPUT if name in self.model.outputs else TensorIOMode.NONE

            def get_tensor_dtype(self, name: str) -> DataType:
                return {**self.model.inputs, **self.model.outputs}[name]

            def get_tensor_shape(self, name: str) -> Shape:
                if name in self.model.inputs:
                    low, _, high = self.model.spec.profiles[name]
                    return tuple(a if a == b else -1 for a, b in zip(low, high, strict=True))
                profiles = self.model.spec.profiles
                low = self.model.output_shapes({n: profiles[n][0] for n in self.model.inputs})[name]
                high = self.model.output_shapes({n: profiles[n][2] for n in self.model.inputs})[name]
                return tuple(a if a == b else -1 for a, b in zip(low, high, strict=True))

            def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Shape]:
                if profile_index != 0 or name not in self.model.inputs:
                    self.logger.log(Severity.ERROR, f"getProfileShape: no profile {profile_index} for {name}")
                    return []
                return list(self.model.spec.profiles[name])

            def create_execution_context(self, config: Any = None) -> IExecutionContext:
                if rtx and config is not None and not isinstance(config, IRuntimeConfig):
                    raise TypeError("create_execution_context(): incompatible function arguments")
                context = IExecutionContext(self, config)
                double.contexts.append(context)
                return context

            if rtx:

                def create_runtime_config(self) -> IRuntimeConfig:
                    return IRuntimeConfig()

        class IExecutionContext:
            def __init__(self, engine: ICudaEngine, config: Any) -> None:
                self.engine = engine
                self.runtime_config = config
                self.shapes: dict[str, Shape] = {}
                self.addresses: dict[str, int] = {}
                self.executions: list[Execution] = []

            def _error(self, message: str) -> bool:
                self.engine.logger.log(Severity.ERROR, message)
                return False

            def set_input_shape(self, name: str, shape: Any) -> bool:
                model, shape = self.engine.model, tuple(int(d) for d in shape)
                if name not in model.inputs:
                    return self._error(f"IExecutionContext::setInputShape: Error Code 3: {name} is not an input")
                low, _, high = model.spec.profiles[name]
                inside = len(shape) == len(low) and all(a <= d <= b for d, a, b in zip(shape, low, high, strict=True))
                if not inside:
                    return self._error(
                        f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check failed, "
                        f"condition: satisfyProfile. Set dimension {list(shape)} for tensor {name} does not "
                        f"satisfy any optimization profiles.)"
                    )
                self.shapes[name] = shape
                return True

            def get_tensor_shape(self, name: str) -> Shape:
                model = self.engine.model
                if name in model.inputs:
                    return self.shapes.get(name, self.engine.get_tensor_shape(name))
                if any(n not in self.shapes for n in model.inputs):
                    return self.engine.get_tensor_shape(name)
                return model.output_shapes(self.shapes)[name]

            def set_tensor_address(self, name: str, memory: int) -> bool:
                if name not in self.engine._names:
                    return self._error(f"IExecutionContext::setTensorAddress: Error Code 3: no tensor {name}")
                self.addresses[name] = int(memory)
                return True

            def execute_async_v3(self, stream_handle: int) -> bool:
                model = self.engine.model
                if stream_handle not in gpu.streams:
                    return self._error(
                        f"IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (invalid stream {stream_handle})"
                    )
                unset = [n for n in model.inputs if n not in self.shapes]
                missing = [n for n in self.engine._names if n not in self.addresses]
                if unset or missing:
                    return self._error(
                        f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (shapes unset: {unset}, "
                        f"addresses unset: {missing})"
                    )
                if double.before_execute is not None:
                    double.before_execute()
                shapes = {**self.shapes, **model.output_shapes(self.shapes)}
                addresses = dict(self.addresses)  # what a graph captures: the addresses at enqueue time
                self.executions.append(Execution(stream_handle, addresses, shapes))

                def work() -> None:
                    feeds = {}
                    for name, dtype in model.inputs.items():
                        nbytes = int(np.prod(shapes[name])) * np.dtype(_NUMPY[dtype]).itemsize
                        raw = np.frombuffer(gpu.region(addresses[name], nbytes), _NUMPY[dtype])
                        feeds[name] = raw.reshape(shapes[name]).copy()
                    results = model.session.run(list(model.outputs), feeds)
                    for (name, dtype), result in zip(model.outputs.items(), results, strict=True):
                        if tuple(result.shape) != shapes[name]:
                            raise AssertionError(f"the double's output shape for {name} is wrong: {result.shape}")
                        data = np.ascontiguousarray(result, dtype=_NUMPY[dtype]).tobytes()
                        gpu.region(addresses[name], len(data))[:] = data

                gpu.enqueue(stream_handle, "execute", 0, work)
                return True

        class Logger(ILogger):
            WARNING = Severity.WARNING

            def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
                super().__init__()
                self.min_severity = min_severity

            def log(self, severity: Severity, msg: str) -> None:
                pass

        module.__version__ = VERSIONS[self.flavour]  # type: ignore[attr-defined]
        module.ILogger = ILogger  # type: ignore[attr-defined]
        module.Logger = Logger  # type: ignore[attr-defined]
        module.Runtime = Runtime  # type: ignore[attr-defined]
        module.ICudaEngine = ICudaEngine  # type: ignore[attr-defined]
        module.IExecutionContext = IExecutionContext  # type: ignore[attr-defined]
        module.TensorIOMode = TensorIOMode  # type: ignore[attr-defined]
        module.DataType = DataType  # type: ignore[attr-defined]
        module.nptype = lambda dtype: _NUMPY[dtype]  # type: ignore[attr-defined]
        if rtx:
            module.IRuntimeConfig = IRuntimeConfig  # type: ignore[attr-defined]
            module.CudaGraphStrategy = CudaGraphStrategy  # type: ignore[attr-defined]
        return module
