"""The build plan: which engines this host needs, one per served model × distinct GPU model.

Two cards of the same model share an engine; the RTX 4090 and the L4 share sm_89 but are tuned apart, so they
get one engine each. Shapes come from the manifest's min/opt/max; a model with none cannot be planned.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from appliance import __version__
from appliance.catalog import Catalog, Manifest
from appliance.config import Node
from appliance.engines.settings import EngineSettings, HardwareCompatibility, Precision
from appliance.gpu import GpuDevice

__all__ = ["EngineKey", "GpuTarget", "PlanError", "PlannedEngine", "Profile", "build_plan", "plan_engine"]


class PlanError(ValueError):
    """The node file or a manifest asks for an engine that cannot be built; the message says what to change."""


@dataclass(frozen=True)
class GpuTarget:
    """A distinct GPU model of this host."""

    name: str
    major: int
    minor: int

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")


@dataclass(frozen=True)
class Profile:
    """min/opt/max shapes of one input."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on; the TensorRT flavour and version are filled in at build time."""

    onnx_sha256: str
    gpu_name: str
    compute_capability: str
    precision: Precision
    profiles: tuple[Profile, ...]
    hardware_compatibility: HardwareCompatibility
    optimization_level: int
    appliance_version: str

    def digest(self, *, tensorrt: str) -> str:
        """A stable hash of the key plus the TensorRT flavour and version (e.g. ``tensorrt-rtx 1.7.1``)."""
        canonical = json.dumps({**asdict(self), "tensorrt": tensorrt}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PlannedEngine:
    model: str
    gpu: GpuTarget
    key: EngineKey

    def file_name(self, *, tensorrt: str) -> str:
        digest = self.key.digest(tensorrt=tensorrt)[:16]
        return f"{self.model}.{self.gpu.slug}.{self.key.precision}.{digest}.engine"


def _profiles(manifest: Manifest) -> tuple[Profile, ...]:
    profiles = []
    for tensor in manifest.inputs:
        if tensor.min_shape is None or tensor.opt_shape is None or tensor.max_shape is None:
            raise PlanError(
                f"model {manifest.name!r}: input {tensor.name!r} has no min/opt/max shapes in its "
                "manifest; an engine needs them"
            )
        profiles.append(Profile(tensor.name, tuple(tensor.min_shape), tuple(tensor.opt_shape), tuple(tensor.max_shape)))
    return tuple(profiles)


def distinct_targets(gpus: tuple[GpuDevice, ...] | list[GpuDevice]) -> list[GpuTarget]:
    """One target per GPU model, in index order."""
    return list(dict.fromkeys(GpuTarget(g.name, g.major, g.minor) for g in gpus))


def plan_engine(
    model: str, manifest: Manifest, target: GpuTarget, *, onnx_sha256: str, settings: EngineSettings
) -> PlannedEngine:
    """The one engine ``model`` needs on ``target`` (what the build plan holds, and what serving looks up).

    Raises PlanError when it cannot be built: int8 without calibration data, a manifest without shapes, a GPU
    older than the compatibility level allows.
    """
    if settings.precision == "int8":
        raise PlanError("int8 engines need calibration data, and no manifest names any yet: use fp16")
    if (target.major, target.minor) < (8, 0) and settings.hardware_compatibility == "ampere-plus":
        raise PlanError(f"{target.name} (sm_{target.major}{target.minor}) is older than Ampere")
    key = EngineKey(
        onnx_sha256=onnx_sha256,
        gpu_name=target.name,
        compute_capability=target.compute_capability,
        precision=settings.precision,
        profiles=_profiles(manifest),
        hardware_compatibility=settings.hardware_compatibility,
        optimization_level=settings.optimization_level,
        appliance_version=__version__,
    )
    return PlannedEngine(model=model, gpu=target, key=key)


def build_plan(
    node: Node, catalog: Catalog, targets: list[GpuTarget], *, onnx_sha256: dict[str, str], settings: EngineSettings
) -> list[PlannedEngine]:
    """The engines to build; ``onnx_sha256`` maps each model to its verified file hash. Raises PlanError."""
    if settings.precision == "int8":
        raise PlanError("int8 engines need calibration data, and no manifest names any yet: use fp16")
    plan = []
    for model in dict.fromkeys(entry.model for entry in node.models):
        manifest = catalog.get(model)
        _profiles(manifest)  # a model without shapes is an error even on a host with no GPU to plan for
        for target in targets:
            plan.append(plan_engine(model, manifest, target, onnx_sha256=onnx_sha256[model], settings=settings))
    return plan
