"""GPU discovery and the hardware routes, with NVML replaced by a double (no GPU exists on CI machines).

The double implements the slice of pynvml the probe calls, with pynvml's own names, return types (bytes or
str names, memory objects) and error class, and describes two real cards: an RTX 4090 and an L4.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.gpu import probe_gpus
from tests.conftest import AppFactory
from tests.helpers import assert_contract_response


@dataclass
class _Memory:
    total: int
    free: int
    used: int


@dataclass
class _Rates:
    gpu: int
    memory: int


CARDS = [
    ("GPU-4090", b"NVIDIA GeForce RTX 4090", (8, 9), _Memory(25_757_220_864, 20_000_000_000, 5_757_220_864)),
    ("GPU-L4", "NVIDIA L4", (8, 9), _Memory(24_152_899_584, 24_000_000_000, 152_899_584)),
]


def _nvml_double(*, library_present: bool = True) -> types.ModuleType:
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):  # pynvml's name
        pass

    def init() -> None:
        if not library_present:
            raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    def card(handle: Any) -> Any:
        return CARDS[handle]

    module.NVMLError = NVMLError  # type: ignore[attr-defined]
    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(CARDS)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
    module.nvmlDeviceGetUUID = lambda h: card(h)[0]  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda h: card(h)[1]  # type: ignore[attr-defined]
    module.nvmlDeviceGetCudaComputeCapability = lambda h: card(h)[2]  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda h: card(h)[3]  # type: ignore[attr-defined]
    module.nvmlDeviceGetUtilizationRates = lambda h: _Rates(gpu=37 + h, memory=12)  # type: ignore[attr-defined]
    module.nvmlSystemGetDriverVersion = lambda: b"580.65.06"  # type: ignore[attr-defined]
    module.nvmlSystemGetCudaDriverVersion = lambda: 13000  # type: ignore[attr-defined]
    return module


def test_no_driver_is_a_clean_empty_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _nvml_double(library_present=False))
    probe = probe_gpus()
    assert probe.gpus == () and probe.problem is not None and "Library Not Found" in probe.problem


def test_probe_reads_every_card(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _nvml_double())
    probe = probe_gpus()
    assert probe.driver_version == "580.65.06" and probe.cuda_driver_version == 13000 and probe.problem is None
    assert [(g.index, g.name, g.major, g.minor) for g in probe.gpus] == [
        (0, "NVIDIA GeForce RTX 4090", 8, 9),
        (1, "NVIDIA L4", 8, 9),
    ]


def test_hardware_routes_report_gpus_per_contract(make_client: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _nvml_double())
    client: TestClient[Any] = make_client([{"model": "waifu2x-upconv7", "capability": "upscale"}])
    info = client.get("/m/upscale/waifu2x-upconv7/hardware/info")
    assert_contract_response("/hardware/info", "get", info.status_code, info.headers["content-type"], info.json())
    assert info.json()["gpu_info"]["1"] == {
        "id": "GPU-L4",
        "name": "NVIDIA L4",
        "memory_total": 24_152_899_584,
        "memory_free": 24_000_000_000,
        "major": 8,
        "minor": 9,
    }
    stats = client.get("/hardware/stats")
    assert_contract_response("/hardware/stats", "get", stats.status_code, stats.headers["content-type"], stats.json())
    assert stats.json()["gpu_stats"]["0"]["utilization_compute"] == 37
