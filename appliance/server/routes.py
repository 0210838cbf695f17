"""Route handlers for each served entry, under its own base path, and the worker-wide routes.

Per entry (``/m/<capability>/<model_id>``): ``/health``, ``/version``, ``/hardware/info``, ``/hardware/stats``
as go-livepeer's start-up handshake needs them, plus the inference route: the contract's ``/upscale`` for
upscale models, ``/<capability>`` for capabilities outside go-livepeer's fixed list (depth, segmentation,
style-transfer). Every route is also mounted with a trailing slash, as ai-runner does.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler

from appliance import __version__
from appliance.backends import BackendError, BackendInputError
from appliance.batching import caller
from appliance.gpu import probe_gpus
from appliance.imaging import ImageError, data_url, decode_image, encode_png
from appliance.runtime import ModelState, Runtime, ServedEntry
from appliance.server.capacity import CapacityLimiter, Timing
from appliance.server.drain import Drain
from appliance.server.errors import (
    BYOC_STATUSES,
    CONTRACT_STATUSES,
    INFO_STATUSES,
    BadRequest,
    InferenceFailed,
    InsufficientCapacity,
    ModelUnavailable,
    RunnerError,
)
from appliance.server.forms import Upload, decode_fields, read_upload
from appliance.server.metrics import Metrics
from appliance.server.schemas import (
    GPUComputeInfo,
    GPUUtilizationInfo,
    HardwareInformation,
    HardwareStats,
    HealthCheck,
    ImageResponse,
    Media,
    ModelStatus,
    ServedRoute,
    UpscaleForm,
    Version,
    WorkerIndex,
)

__all__ = ["EntryRoutes", "served_routes", "worker_routes"]

log = structlog.get_logger("appliance.server")


def _paths(path: str) -> list[str]:
    return [path, path + "/"]


def info_handlers(
    prefix: str, name: str, *, pipeline: str, model_id: str, status: Callable[[], ModelState]
) -> list[HTTPRouteHandler]:
    """``/health``, ``/version``, ``/hardware/info``, ``/hardware/stats`` under ``prefix`` (an entry's base path,
    or "" for the worker as a whole)."""

    def health() -> HealthCheck:
        return HealthCheck(status=status())

    def version() -> Version:
        return Version(pipeline=pipeline, model_id=model_id, version=__version__)

    def hardware_info() -> HardwareInformation:
        gpus = {
            str(g.index): GPUComputeInfo(
                id=g.uuid,
                name=g.name,
                memory_total=g.memory_total,
                memory_free=g.memory_free,
                major=g.major,
                minor=g.minor,
            )
            for g in probe_gpus().gpus
        }
        return HardwareInformation(pipeline=pipeline, model_id=model_id, gpu_info=gpus)

    def hardware_stats() -> HardwareStats:
        gpus = {
            str(g.index): GPUUtilizationInfo(
                id=g.uuid,
                name=g.name,
                memory_total=g.memory_total,
                memory_free=g.memory_free,
                utilization_compute=g.utilization_compute,
                utilization_memory=g.utilization_memory,
            )
            for g in probe_gpus().gpus
        }
        return HardwareStats(pipeline=pipeline, model_id=model_id, gpu_stats=gpus)

    routes: list[tuple[str, Callable[[], Any], bool]] = [  # (route, handler, blocking: run it on a thread)
        ("health", health, False),
        ("version", version, False),
        ("hardware/info", hardware_info, True),  # NVML calls block
        ("hardware/stats", hardware_stats, True),
    ]
    return [
        get(
            _paths(f"{prefix}/{route}"),
            name=f"{name}{route.replace('/', '-')}",
            opt={"statuses": INFO_STATUSES},
            sync_to_thread=blocking,
        )(handler)
        for route, handler, blocking in routes
    ]


class EntryRoutes:
    """The routes of one served entry, and the admission + inference path they share."""

    def __init__(self, entry: ServedEntry, runtime: Runtime, metrics: Metrics, drain: Drain) -> None:
        self.entry, self.runtime, self.metrics, self.drain = entry, runtime, metrics, drain
        config = entry.config
        self.limiter = CapacityLimiter(
            config.served_id,
            capacity=config.capacity,
            queue=config.queue,
            niceness=runtime.node.worker.inference_niceness,
        )
        self.model_label = entry.label
        if config.batch is not None:  # lpa_batch_size exists only for models that batch
            entry.on_batch = metrics.batch_size.labels(self.model_label).observe

    # --- the shared inference path -------------------------------------------------------------------------

    async def refuse_if_busy(self, request: Request[Any, Any, Any]) -> None:
        """Refuse at once, as busy, a request this model could not admit now: before its upload is parsed.

        Under overload most requests are refused; parsing each one's multipart body, only to drop it, would load
        the event loop that ``/health`` and the admitted requests need. The body is still read to its end and
        thrown away, chunk by chunk, so the refusal reaches the client instead of a reset connection. ``infer``
        checks admission again: this is the cheap early answer, not the guarantee.
        """
        if not (self.limiter.full or self.entry.state == "LOADING"):
            return
        async for _ in request.stream():
            pass
        self.refuse_if_loading()
        raise InsufficientCapacity()

    def refuse_if_loading(self) -> None:
        if self.entry.state == "LOADING":
            raise InsufficientCapacity(f"model {self.entry.config.served_id!r} is still loading")

    async def infer(self, upload: Upload, option_fields: dict[str, str], respond: Callable[[bytes], bytes]) -> bytes:
        """Decode, run, encode the PNG and ``respond(png)`` (the response body) in a slot of this model.

        Everything heavy, the response's base64 and JSON included, runs on the model's thread, never on the
        event loop. Raises a RunnerError for every failure.

        ``option_fields`` are the request's text fields meant for the pipeline (422 when it does not take them).
        """
        entry, label = self.entry, self.model_label
        try:
            self.refuse_if_loading()
            if entry.state == "ERROR" or entry.pipeline is None:
                raise ModelUnavailable(f"model {entry.config.served_id!r} failed to load: {entry.error}")
            pipeline = entry.pipeline
            options = decode_fields(option_fields, pipeline.options_type)
            max_pixels = self.runtime.node.worker.max_image_pixels

            def work() -> bytes:
                try:
                    image = decode_image(upload.image, max_pixels=max_pixels)
                except ImageError as exc:
                    raise BadRequest(str(exc)) from None
                try:
                    with caller(entry.batcher):  # this request may join a batch until its pipeline is done
                        output = pipeline.process(image, options)
                    png = encode_png(output)
                except BackendInputError as exc:  # the request is outside what the model's engine accepts
                    raise BadRequest(f"model {entry.config.served_id!r}: {exc}") from None
                except BackendError as exc:
                    raise InferenceFailed(f"model {entry.config.served_id!r}: {exc}") from None
                return respond(png)

            timing = Timing()
            body = await self.limiter.run(work, timing)
            self.metrics.queue_seconds.labels(label).observe(timing.queued_s)
            self.metrics.inference_seconds.labels(label).observe(timing.inference_s)
            return body
        except RunnerError:
            raise  # counted by the error handler, with every other error answer
        except Exception as exc:  # a bug in a pipeline: answer 500 with a message, keep serving
            log.exception("inference crashed", model=label)
            raise InferenceFailed(f"model {entry.config.served_id!r} failed: {type(exc).__name__}") from exc

    def check_model_id(self, requested: str) -> None:
        if requested and requested != self.entry.config.served_id:
            raise BadRequest(
                f"model_id {requested!r} is not served here; this route serves {self.entry.config.served_id!r}"
            )

    # --- handlers --------------------------------------------------------------------------------------------

    def handlers(self) -> list[HTTPRouteHandler]:
        base, config = self.entry.base_path, self.entry.config
        name = self.entry.label.replace("/", ":")
        handlers = info_handlers(
            base, f"{name}:", pipeline=config.capability, model_id=config.served_id, status=lambda: self.entry.state
        )
        if config.capability == "upscale":  # go-livepeer's fixed pipeline: the contract's route and statuses
            inference, statuses = self._upscale(), CONTRACT_STATUSES
        else:  # a capability outside go-livepeer's list, reached through BYOC
            inference, statuses = self._byoc(), BYOC_STATUSES
        route = self.entry.inference_path
        handlers.append(
            post(_paths(route), name=f"{name}:{config.capability}", status_code=200, opt={"statuses": statuses})(
                inference
            )
        )
        return handlers

    def _upscale(self) -> Callable[[Request[Any, Any, Any]], Any]:
        async def upscale(request: Request[Any, Any, Any]) -> Response[bytes]:
            with self.drain.request():  # refused as busy while the worker stops; counted in flight otherwise
                await self.refuse_if_busy(request)
                upload = await read_upload(request, file_field="image", allow_raw=False)
                form = decode_fields(upload.fields, UpscaleForm)
                self.check_model_id(form.model_id)
                seed = form.seed if form.seed is not None else secrets.randbelow(2**32)
                # The contract's prompt and steps mean nothing to a 2× net: no options reach the pipeline.
                body = await self.infer(upload, {}, lambda png: _image_response(png, seed))
            return Response(content=body, media_type="application/json", status_code=200)

        return upscale

    def _byoc(self) -> Callable[[Request[Any, Any, Any]], Any]:
        async def run_capability(request: Request[Any, Any, Any]) -> Response[bytes]:
            with self.drain.request():
                await self.refuse_if_busy(request)
                upload = await read_upload(request, file_field="image", allow_raw=True)
                fields = dict(upload.fields)
                self.check_model_id(fields.pop("model_id", ""))
                if request.accept.best_match(["application/json", "image/png"]) == "image/png":
                    png = await self.infer(upload, fields, lambda png: png)
                    return Response(content=png, media_type="image/png", status_code=200)
                body = await self.infer(upload, fields, lambda png: _image_response(png, 0))
            return Response(content=body, media_type="application/json", status_code=200)

        return run_capability


def _image_response(png: bytes, seed: int) -> bytes:
    """The contract's ImageResponse with the PNG as a data URL, as JSON bytes."""
    return msgspec.json.encode(ImageResponse(images=[Media(url=data_url(png), seed=seed, nsfw=False)]))


def served_routes(entries: list[EntryRoutes]) -> list[ServedRoute]:
    """The entries as the index and the 404 answers list them, with their state now."""
    return [
        ServedRoute(
            capability=e.entry.config.capability,
            model_id=e.entry.config.served_id,
            base_path=e.entry.base_path,
            inference=f"POST {e.entry.inference_path}",
            status=e.entry.state,
        )
        for e in entries
    ]


# Where a newcomer (or an operator's script) looks next, as the index links them.
WORKER_LINKS = {
    "health": "/health",
    "models": "/models",
    "openapi": "/openapi.json",
    "metrics": "/metrics",
    "hardware": "/hardware/info",
}


def worker_routes(
    runtime: Runtime, metrics: Metrics, entries: list[EntryRoutes], openapi: dict[str, Any]
) -> list[HTTPRouteHandler]:
    """Worker-wide routes: the index ``/``, aggregate ``/health``, ``/version``, ``/hardware/*``, ``/models``,
    ``/metrics``, and ``/openapi.json`` (``openapi``, server/openapi.py)."""
    statuses = {"statuses": INFO_STATUSES}

    @get("/", name="index", sync_to_thread=False, opt=statuses)
    def index() -> WorkerIndex:
        return WorkerIndex(
            service="livepeer-appliance worker",
            version=__version__,
            entries=served_routes(entries),
            links=WORKER_LINKS,
        )

    @get(_paths("/models"), name="models", sync_to_thread=False, opt=statuses)
    def models() -> list[ModelStatus]:
        return [
            ModelStatus(
                model=e.entry.config.model,
                capability=e.entry.config.capability,
                model_id=e.entry.config.served_id,
                base_path=e.entry.base_path,
                status=e.entry.state,
                error=e.entry.error,
                backend=e.entry.backend_name,
                backend_reason=e.entry.backend_reason,
                load_seconds=e.entry.load_seconds,
                capacity=e.entry.config.capacity,
                queue=e.entry.config.queue,
                in_flight=e.limiter.running,
                waiting=e.limiter.waiting,
                warm=e.entry.config.warm,
            )
            for e in entries
        ]

    @get(_paths("/metrics"), name="metrics", sync_to_thread=False, opt=statuses)
    def prometheus() -> Response[bytes]:
        for routes in entries:  # slot gauges are read from the limiters at scrape time, never stale
            metrics.in_flight.labels(routes.model_label).set(routes.limiter.running)
            metrics.queued.labels(routes.model_label).set(routes.limiter.waiting)
        return Response(content=metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    document = msgspec.json.encode(openapi)

    @get(_paths("/openapi.json"), name="openapi", sync_to_thread=False, opt=statuses)
    def openapi_json() -> Response[bytes]:
        return Response(content=document, media_type="application/json")

    aggregate = info_handlers("", "", pipeline="", model_id="", status=lambda: runtime.state)
    return [*aggregate, index, models, prometheus, openapi_json]
