"""One strict base for every file the appliance reads (node file, model manifests), and its decoder.

msgspec already names the failing path (``$.models[2].capacity``); this module only adds the file name and
turns both decode and cross-field errors into one exception type the CLI prints as-is.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

import msgspec

__all__ = ["ConfigError", "StrictStruct", "decode_toml_file", "decode_toml_text"]

T = TypeVar("T")


class ConfigError(Exception):
    """A file the appliance reads is missing, malformed, or inconsistent. The message names file and path."""


class StrictStruct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base for configuration types: unknown keys are rejected, fields are immutable.

    msgspec does not inherit ``kw_only`` (and type checkers not ``frozen``): subclasses repeat both.
    """


def decode_toml_text(text: str, type_: type[T], *, source: str) -> T:
    """Decode TOML text into ``type_``; raises ConfigError naming ``source`` and the failing path."""
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return msgspec.convert(raw, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except ValueError as exc:  # raised by __post_init__ cross-field checks
        raise ConfigError(f"{source}: {exc}") from exc


def decode_toml_file(path: Path, type_: type[T]) -> T:
    """Read and decode a TOML file; a missing or unreadable file is a ConfigError too."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return decode_toml_text(text, type_, source=str(path))
