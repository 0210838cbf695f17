"""Building the Litestar application of a worker from its node file and runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import structlog
from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware

from appliance.priority import lower_thread_priority
from appliance.runtime import Runtime
from appliance.server.auth import bearer_guard
from appliance.server.errors import handle_error
from appliance.server.logging import RequestLogMiddleware
from appliance.server.metrics import Metrics
from appliance.server.routes import EntryRoutes, worker_routes

__all__ = ["create_app"]

log = structlog.get_logger("appliance.server")


def create_app(runtime: Runtime, *, token: str | None, load_in_background: bool = True) -> Litestar:
    """The worker app. Models load in a background thread at start-up; ``/health`` says LOADING meanwhile."""
    metrics = Metrics()
    for entry in runtime.entries:
        metrics.model_state.labels(entry.label, "LOADING").set(1)
    entries = [EntryRoutes(entry, runtime, metrics) for entry in runtime.entries]
    handlers = [h for e in entries for h in e.handlers()] + worker_routes(runtime, metrics, entries)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        # Sessions are created on a thread of their own at lowered priority: onnxruntime's pool threads
        # inherit it (see priority.py). The shared default executor keeps normal priority.
        niceness = runtime.node.worker.inference_niceness
        loader_thread = ThreadPoolExecutor(1, "model-loader", lower_thread_priority, (niceness,))
        loader = asyncio.get_running_loop().run_in_executor(loader_thread, _load_and_record, runtime, metrics)
        loader_thread.shutdown(wait=False)  # the submitted load still runs; the thread ends after it
        if not load_in_background:
            await loader
        try:
            yield
        finally:
            if not loader.done():  # a loading thread cannot be interrupted: let it finish before closing
                await asyncio.shield(loader)
            for entry in entries:
                entry.limiter.shutdown()
            log.info("worker stopped", models=len(entries))

    return Litestar(
        route_handlers=handlers,
        guards=[bearer_guard(token)] if token else [],
        exception_handlers={Exception: handle_error},
        middleware=[DefineMiddleware(RequestLogMiddleware, metrics=metrics)],
        lifespan=[lifespan],
        request_max_body_size=runtime.node.worker.max_body_bytes,
        state=State({"max_body_bytes": runtime.node.worker.max_body_bytes, "metrics": metrics}),
        openapi_config=None,
        logging_config=None,  # logs are structlog JSON lines (server/logging.py); leave stdlib logging alone
        debug=False,
    )


def _load_and_record(runtime: Runtime, metrics: Metrics) -> None:
    runtime.load_all()
    for entry in runtime.entries:
        label = entry.label
        for state in ("LOADING", "OK", "ERROR"):
            metrics.model_state.labels(label, state).set(1 if entry.state == state else 0)
        if entry.load_seconds is not None:
            metrics.load_seconds.labels(label).set(entry.load_seconds)
        if entry.backend_name:
            metrics.backend.labels(label, entry.backend_name).set(1)
