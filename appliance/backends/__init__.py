"""Backends run a model's graph. Pipelines see only the :class:`Backend` interface; the ladder picks one."""

from __future__ import annotations

from appliance.backends.base import Backend, BackendError, BackendInputError
from appliance.backends.ladder import (
    BackendChoice,
    EngineRequest,
    HostFacts,
    Prediction,
    create_backend,
    host_facts,
    predict_backend,
)

__all__ = [
    "Backend",
    "BackendChoice",
    "BackendError",
    "BackendInputError",
    "EngineRequest",
    "HostFacts",
    "Prediction",
    "create_backend",
    "host_facts",
    "predict_backend",
]
