"""GPU discovery through NVML (nvidia-ml-py). No GPU or no driver is a valid, clean answer, never an error."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GpuDevice", "GpuProbe", "probe_gpus"]


@dataclass(frozen=True)
class GpuDevice:
    index: int
    uuid: str
    name: str
    major: int
    minor: int
    memory_total: int
    memory_free: int
    utilization_compute: int  # percent over NVML's last sample period
    utilization_memory: int


@dataclass(frozen=True)
class GpuProbe:
    gpus: tuple[GpuDevice, ...]
    driver_version: str | None
    cuda_driver_version: int | None
    problem: str | None  # why there are no GPUs, when there are none


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def probe_gpus() -> GpuProbe:
    """Every GPU NVML sees, with its live memory and utilisation; an empty probe with the reason when none."""
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
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            gpus.append(
                GpuDevice(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    major=major,
                    minor=minor,
                    memory_total=int(memory.total),
                    memory_free=int(memory.free),
                    utilization_compute=int(rates.gpu),
                    utilization_memory=int(rates.memory),
                )
            )
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())
        return GpuProbe(tuple(gpus), driver, cuda, None if gpus else "NVML found no GPU")
    except pynvml.NVMLError as exc:
        return GpuProbe((), None, None, f"NVML query failed: {exc}")
    finally:
        pynvml.nvmlShutdown()
