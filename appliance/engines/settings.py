"""The node file's ``[engines]`` section: how engines are built for this host's GPUs."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from appliance.strict import StrictStruct

__all__ = ["EngineSettings", "HardwareCompatibility", "Precision"]

Precision = Literal["fp32", "fp16", "int8"]
# TensorRT's hardware-compatibility levels: an engine for exactly this GPU model (fastest), one that runs on any
# GPU of the same compute capability, or on any Ampere-or-newer GPU (slowest, most portable).
HardwareCompatibility = Literal["none", "same-compute-capability", "ampere-plus"]


class EngineSettings(StrictStruct, frozen=True, kw_only=True):
    precision: Precision = "fp16"
    # TensorRT's builder optimisation level, 0 (fast builds) to 5 (slowest builds, fastest engines); 3 is its default.
    optimization_level: Annotated[int, msgspec.Meta(ge=0, le=5)] = 3
    hardware_compatibility: HardwareCompatibility = "none"
    cache_dir: str = "~/.cache/livepeer-appliance/engines"
