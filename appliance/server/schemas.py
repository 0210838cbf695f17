"""Response bodies, as the runner contract (ai-runner's openapi.yaml) defines them."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "APIError",
    "FieldError",
    "GPUComputeInfo",
    "GPUUtilizationInfo",
    "HTTPError",
    "HTTPValidationError",
    "HardwareInformation",
    "HardwareStats",
    "HealthCheck",
    "ImageResponse",
    "Media",
    "ModelStatus",
    "ServedRoute",
    "UpscaleForm",
    "Version",
    "WorkerIndex",
]


class Media(msgspec.Struct):
    url: str
    seed: int
    nsfw: bool


class ImageResponse(msgspec.Struct):
    images: list[Media]


class HealthCheck(msgspec.Struct):
    status: Literal["LOADING", "OK", "ERROR", "IDLE"]


class Version(msgspec.Struct):
    pipeline: str
    model_id: str
    version: str


class GPUComputeInfo(msgspec.Struct):
    id: str
    name: str
    memory_total: int
    memory_free: int
    major: int
    minor: int


class GPUUtilizationInfo(msgspec.Struct):
    id: str
    name: str
    memory_total: int
    memory_free: int
    utilization_compute: int
    utilization_memory: int


class HardwareInformation(msgspec.Struct):
    pipeline: str
    model_id: str
    gpu_info: dict[str, GPUComputeInfo]


class HardwareStats(msgspec.Struct):
    pipeline: str
    model_id: str
    gpu_stats: dict[str, GPUUtilizationInfo]


class ModelStatus(msgspec.Struct):
    """One entry of the worker's own ``/models`` listing (not part of the runner contract)."""

    model: str
    capability: str
    model_id: str
    base_path: str
    status: Literal["LOADING", "OK", "ERROR"]
    error: str | None
    backend: str | None
    backend_reason: str | None
    load_seconds: float | None
    capacity: int
    queue: int
    in_flight: int
    waiting: int
    warm: bool


class ServedRoute(msgspec.Struct):
    """One served entry as the worker's index (``GET /``) and its 404 answers name it."""

    capability: str
    model_id: str
    base_path: str
    inference: str  # the entry's inference route: "POST <base_path>/<route>"
    status: Literal["LOADING", "OK", "ERROR"]


class WorkerIndex(msgspec.Struct):
    """``GET /``: what this worker is and where to look next (not part of the runner contract)."""

    service: str
    version: str
    entries: list[ServedRoute]
    links: dict[str, str]


class UpscaleForm(msgspec.Struct):
    """The text fields of the contract's ``Body_genUpscale`` (the ``image`` file part is read separately).

    Unknown fields are ignored, as ai-runner (FastAPI) ignores them.
    """

    prompt: str
    model_id: str = ""
    safety_check: bool = True
    seed: int | None = None
    num_inference_steps: Annotated[int, msgspec.Meta(ge=1)] = 75


class APIError(msgspec.Struct):
    msg: str


class HTTPError(msgspec.Struct):
    """Every error answer but 422 (errors.py builds it)."""

    detail: APIError


class FieldError(msgspec.Struct):
    loc: list[str | int]
    msg: str
    type: str


class HTTPValidationError(msgspec.Struct):
    """422, in FastAPI's shape (the contract's ``HTTPValidationError``)."""

    detail: list[FieldError]
