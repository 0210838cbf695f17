"""Files that ship with the appliance: the model catalog and the example node file.

In a source checkout they live at the repository root (``models/``, ``node.example.toml``); in an installed
wheel they are copied into ``appliance/_data``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["bundled_catalog_dir", "example_node_file"]

_PACKAGE = Path(__file__).resolve().parent


def _bundled(name: str) -> Path:
    installed = _PACKAGE / "_data" / name
    return installed if installed.exists() else _PACKAGE.parent / name


def bundled_catalog_dir() -> Path:
    return _bundled("models")


def example_node_file() -> Path:
    return _bundled("node.example.toml")
