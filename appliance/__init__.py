"""Livepeer AI orchestrator appliance: an inference worker go-livepeer calls as an external AI runner."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("livepeer-appliance")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
