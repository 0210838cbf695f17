"""The models a worker serves, their load state, and loading them (verify → backend → pipeline → warm-up).

Loading never raises: a model that fails is marked ``ERROR`` with the reason and the others keep loading, so
one corrupt file costs one entry, not the node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from appliance.backends import Backend, BackendError, EngineRequest, HostFacts, create_backend, host_facts
from appliance.batching import Batcher, check_batching, unbatchable_backend
from appliance.catalog import Catalog, Manifest
from appliance.config import Node, ServedModel
from appliance.modelstore import ModelFileError, ModelStore
from appliance.pipelines import Pipeline, create_pipeline

__all__ = ["ModelState", "Runtime", "ServedEntry", "entry_base_path"]

ModelState = Literal["LOADING", "OK", "ERROR"]

log = structlog.get_logger("appliance.runtime")


def entry_base_path(entry: ServedModel) -> str:
    """Each (capability, model) has its own URL prefix; go-livepeer's ``url`` for the entry points here."""
    return f"/m/{entry.capability}/{entry.served_id}"


@dataclass
class ServedEntry:
    config: ServedModel
    manifest: Manifest
    state: ModelState = "LOADING"
    error: str | None = None
    pipeline: Pipeline[Any, Any] | None = None
    backend_name: str | None = None
    backend_reason: str | None = None
    load_seconds: float | None = None
    # Set when the entry batches (its `batch` setting, on a backend that can): the pipeline runs through it.
    batcher: Batcher | None = None
    # Called with each batch's size (the server's metrics hook it here before loading starts).
    on_batch: Callable[[int], None] | None = None

    @property
    def base_path(self) -> str:
        return entry_base_path(self.config)

    @property
    def inference_path(self) -> str:
        """The entry's inference route: ``<base_path>/<capability>`` (the contract's ``/upscale`` for upscale)."""
        return f"{self.base_path}/{self.config.capability}"

    @property
    def label(self) -> str:
        return f"{self.config.capability}/{self.config.served_id}"


class Runtime:
    def __init__(self, node: Node, catalog: Catalog, *, allow_gpu: bool = True, gpu: int | None = None) -> None:
        """``gpu``: the worker instance's GPU index (``lpa serve --gpu N``); ``CUDA_VISIBLE_DEVICES`` wins over it."""
        self.node = node
        self.store = ModelStore(node.worker.model_path)
        self.allow_gpu = allow_gpu
        self.gpu = gpu
        self._host: HostFacts | None = None
        self.entries = [ServedEntry(config=m, manifest=catalog.get(m.model)) for m in node.models]
        for entry in self.entries:
            if entry.manifest.capability != entry.config.capability:
                raise ValueError(
                    f"model {entry.config.model!r} is a {entry.manifest.capability!r} model, "
                    f"not {entry.config.capability!r}"
                )
            check_batching(entry.config, entry.manifest)
        self.loaded = threading.Event()

    @property
    def state(self) -> ModelState:
        states = {e.state for e in self.entries}
        if "ERROR" in states:
            return "ERROR"
        return "LOADING" if "LOADING" in states else "OK"

    @property
    def host(self) -> HostFacts:
        """This host as the backend ladder sees it (GPU, providers, TensorRT), probed once per worker."""
        if self._host is None:
            self._host = host_facts(allow_gpu=self.allow_gpu, gpu_index=self.gpu)
        return self._host

    def engine_request(self, entry: ServedEntry) -> EngineRequest | None:
        """The entry's model as the engine cache keys it; None when its file has no known sha256."""
        sha256 = self.store.expected_sha256(entry.manifest)
        if sha256 is None:
            return None
        return EngineRequest(entry.config.model, entry.manifest, sha256, self.node.engines)

    def load_all(self) -> None:
        for entry in self.entries:
            self.load(entry)
        self.loaded.set()

    def _batching(self, entry: ServedEntry, backend: Backend) -> Backend:
        """The backend the entry's pipeline runs on: a Batcher around ``backend`` when the entry batches."""
        settings = entry.config.batch
        if settings is None:
            return backend
        if (why := unbatchable_backend(backend.name)) is not None:
            log.warning("batching is off for this model", model=entry.label, reason=why)
            return backend

        def observe(rows: int) -> None:
            if entry.on_batch is not None:
                entry.on_batch(rows)

        entry.batcher = Batcher(
            backend,
            max_size=settings.max_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_running=-(-entry.config.capacity // settings.max_size),  # graph calls at once: enough for capacity
            on_batch=observe,
        )
        return entry.batcher

    def load(self, entry: ServedEntry) -> None:
        started = time.perf_counter()
        try:
            path: Path = self.store.verified_path(entry.manifest)
            choice = create_backend(
                path,
                intra_op_threads=self.node.worker.intra_op_threads,
                allow_gpu=self.allow_gpu,
                capacity=entry.config.capacity,
                engine=self.engine_request(entry),
                host=self.host,
            )
            pipeline = create_pipeline(entry.manifest, self._batching(entry, choice.backend))
            if entry.config.warm:
                pipeline.warmup()
        except (ModelFileError, BackendError) as exc:
            entry.state, entry.error = "ERROR", str(exc)
            log.error("model failed to load", model=entry.label, error=str(exc))
            return
        except Exception as exc:  # a model that loads but cannot run its warm-up is broken too
            entry.state, entry.error = "ERROR", f"warm-up failed: {exc}"
            log.exception("model failed to warm up", model=entry.label)
            return
        entry.pipeline, entry.backend_name, entry.backend_reason = (
            pipeline,
            choice.backend.name,
            choice.reason,
        )
        entry.load_seconds = time.perf_counter() - started
        entry.state = "OK"
        log.info(
            "model ready",
            model=entry.label,
            backend=entry.backend_name,
            reason=choice.reason,
            load_seconds=round(entry.load_seconds, 3),
            warm=entry.config.warm,
        )
