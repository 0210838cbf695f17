"""Backends run a model's graph. Pipelines see only the :class:`Backend` interface; the ladder picks one."""

from __future__ import annotations

from appliance.backends.base import Backend, BackendError
from appliance.backends.ladder import BackendChoice, create_backend

__all__ = ["Backend", "BackendChoice", "BackendError", "create_backend"]
