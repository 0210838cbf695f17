"""GPU discovery through NVML (nvidia-ml-py). No GPU or no driver is a valid, clean answer, never an error."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GpuInfo", "GpuProbe", "GpuStats", "gpu_stats", "probe_gpus"]


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    major: int
    minor: int
    memory_total: int
    memory_free: int


@dataclass(frozen=True)
class GpuStats:
    index: int
    uuid: str
    name: str
    memory_total: int
    memory_free: int
    utilization_compute: int
    utilization_memory: int


@dataclass(frozen=True)
class GpuProbe:
    gpus: tuple[GpuInfo, ...]
    driver_version: str | None
    cuda_driver_version: int | None
    problem: str | None  # why there are no GPUs, when there are none


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def probe_gpus() -> GpuProbe:
    import pynvml  # noqa: PLC0415 (imported here so the module loads where the library is absent)

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GpuProbe((), None, None, f"NVML unavailable: {exc}")
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    major=major,
                    minor=minor,
                    memory_total=int(memory.total),
                    memory_free=int(memory.free),
                )
            )
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())
        return GpuProbe(tuple(gpus), driver, cuda, None if gpus else "NVML found no GPU")
    except pynvml.NVMLError as exc:
        return GpuProbe((), None, None, f"NVML query failed: {exc}")
    finally:
        pynvml.nvmlShutdown()


def gpu_stats() -> list[GpuStats]:
    """Live memory and utilisation per GPU; an empty list where there is no GPU."""
    import pynvml  # noqa: PLC0415

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        stats = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            stats.append(
                GpuStats(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_total=int(memory.total),
                    memory_free=int(memory.free),
                    utilization_compute=int(rates.gpu),
                    utilization_memory=int(rates.memory),
                )
            )
        return stats
    except pynvml.NVMLError:
        return []
    finally:
        pynvml.nvmlShutdown()
