"""Building the Litestar application of a worker from its node file and runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import structlog
from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware

from appliance.config import ServedModel
from appliance.instances import WorkerInstance, instance_for
from appliance.livepeer.byoc import ByocRegistrar
from appliance.livepeer.render import PIPELINE_OF
from appliance.notify import notify
from appliance.priority import lower_thread_priority
from appliance.runtime import Runtime
from appliance.server.auth import bearer_check, bearer_guard
from appliance.server.body import BodyDeadlineMiddleware
from appliance.server.drain import Drain
from appliance.server.errors import handle_error
from appliance.server.logging import RequestLogMiddleware, redact
from appliance.server.metrics import Metrics
from appliance.server.openapi import openapi_document
from appliance.server.routes import EntryRoutes, served_routes, worker_routes

__all__ = ["create_app"]

log = structlog.get_logger("appliance.server")


def _byoc_registrar(
    runtime: Runtime, entries: list[EntryRoutes], token: str | None, orch_secret: str | None, url: str
) -> ByocRegistrar | None:
    """The registrar for the node's capabilities outside go-livepeer's list, where registration is configured."""
    node = runtime.node
    byoc = [e for e in entries if e.entry.config.capability not in PIPELINE_OF]
    if node.orchestrator.byoc_url is None or orch_secret is None or not byoc:
        return None
    limiters = {id(e.entry.config): e.limiter for e in byoc}

    def load(config: ServedModel) -> float:
        limiter = limiters[id(config)]
        return limiter.running / limiter.capacity

    return ByocRegistrar(
        node,
        [e.entry.config for e in byoc],
        worker_url=url,
        token=token,
        orch_secret=orch_secret,
        load=load,
    )


def create_app(
    runtime: Runtime,
    *,
    token: str | None,
    orch_secret: str | None = None,
    instance: WorkerInstance | None = None,
    load_in_background: bool = True,
    drain: Drain | None = None,
    on_ready: Callable[[Runtime], None] | None = None,
) -> Litestar:
    """The worker app. Models load in a background thread at start-up; ``/health`` says LOADING meanwhile.

    ``instance``: which of the node's worker instances this is (its URL goes into BYOC registrations);
    default the first. ``drain``: what ``lpa serve`` sets on SIGTERM (server/drain.py); default a fresh one.
    ``on_ready``: called once loading has ended (``lpa serve`` prints where it serves).
    """
    url = (instance or instance_for(runtime.node, None)).url
    redact(token)  # neither secret may reach a log line, whatever carries it there (server/logging.py)
    redact(orch_secret)
    metrics = Metrics()
    for entry in runtime.entries:
        metrics.model_state.labels(entry.label, "LOADING").set(1)
    drain = drain or Drain()
    entries = [EntryRoutes(entry, runtime, metrics, drain) for entry in runtime.entries]
    document = openapi_document(runtime.entries, secured=token is not None)
    handlers = [h for e in entries for h in e.handlers()] + worker_routes(runtime, metrics, entries, document)
    authorized = bearer_check(token)

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
        announcing = asyncio.create_task(_announce_ready(loader, runtime, on_ready))
        registrar = _byoc_registrar(runtime, entries, token, orch_secret, url)
        withdraw = _start_registering(registrar, loader, runtime) if registrar else None
        if withdraw is not None:
            drain.on_start(withdraw)
        try:
            yield
        finally:
            notify("STOPPING=1")
            announcing.cancel()
            if withdraw is not None:
                await withdraw()  # started by the drain already, unless the worker stopped without one
            if not loader.done():  # a loading thread cannot be interrupted: let it finish before closing
                await asyncio.shield(loader)
            for entry in entries:
                entry.limiter.shutdown()
            log.info("worker stopped", models=len(entries))

    app = Litestar(
        route_handlers=handlers,
        guards=[bearer_guard(token)] if token else [],
        exception_handlers={Exception: handle_error},
        middleware=[DefineMiddleware(BodyDeadlineMiddleware, timeout_s=runtime.node.worker.body_timeout_seconds)],
        lifespan=[lifespan],
        request_max_body_size=runtime.node.worker.max_body_bytes,
        state=State(
            {
                "max_body_bytes": runtime.node.worker.max_body_bytes,
                "metrics": metrics,
                # What a 404 under /m/ names (errors.py): only to a caller that could use the routes anyway.
                "served_routes": lambda connection: served_routes(entries) if authorized(connection) else None,
            }
        ),
        openapi_config=None,
        logging_config=None,  # logs are structlog JSON lines (server/logging.py); leave stdlib logging alone
        debug=False,
    )
    # Litestar runs its middleware list only for requests that matched a route; the access log and the request
    # count wrap the whole application instead, so a 404 or 405 is logged and counted like any other answer.
    app.asgi_handler = RequestLogMiddleware(app.asgi_handler, metrics=metrics)
    return app


async def _announce_ready(
    loader: asyncio.Future[None], runtime: Runtime, on_ready: Callable[[Runtime], None] | None
) -> None:
    """Tell systemd (Type=notify) the worker is ready once loading ends, from the serving loop itself."""
    await asyncio.shield(loader)
    if on_ready is not None:
        on_ready(runtime)
    failed = [e.label for e in runtime.entries if e.state == "ERROR"]
    # Ready either way: the worker serves the models that loaded; /health says ERROR for the others.
    status = f"STATUS=serving {len(runtime.entries) - len(failed)} models"
    notify("READY=1", status + (f"; failed: {', '.join(failed)}" if failed else ""))


def _start_registering(
    registrar: ByocRegistrar, loader: asyncio.Future[None], runtime: Runtime
) -> Callable[[], asyncio.Task[None]]:
    """Start registering the BYOC capabilities; return ``withdraw``, which stops that and unregisters them.

    ``withdraw`` starts the work once, whoever calls it first (the drain, or the shutdown), and returns it to
    be awaited."""
    registering = asyncio.create_task(_register_when_loaded(loader, runtime, registrar))
    withdrawing: asyncio.Task[None] | None = None

    async def unregister() -> None:
        registering.cancel()
        await asyncio.gather(registering, return_exceptions=True)
        await registrar.unregister_all()

    def withdraw() -> asyncio.Task[None]:
        nonlocal withdrawing
        if withdrawing is None:
            withdrawing = asyncio.create_task(unregister())
        return withdrawing

    return withdraw


async def _register_when_loaded(loader: asyncio.Future[None], runtime: Runtime, registrar: ByocRegistrar) -> None:
    """Register only models that loaded: a capability in ERROR must not attract jobs."""
    await loader
    ready = {id(e.config) for e in runtime.entries if e.state == "OK"}
    registrar.entries = [config for config in registrar.entries if id(config) in ready]
    await registrar.run()


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
