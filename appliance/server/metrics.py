"""Prometheus metrics of one worker (namespace ``lpa_``), on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("lpa_requests", "Requests answered", ["route", "status"], registry=r)
        self.errors = Counter("lpa_errors", "Error answers by route and reason", ["route", "reason"], registry=r)
        self.queue_seconds = Histogram(
            "lpa_queue_seconds", "Time waiting for a slot", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "lpa_inference_seconds",
            "Decode + model + encode time",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(  # only models with `batch` set: one observation per graph call
            "lpa_batch_size",
            "Requests (rows) per model run of a batching model",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("lpa_in_flight", "Inferences running", ["model"], registry=r)
        self.queued = Gauge("lpa_queued", "Requests waiting for a slot", ["model"], registry=r)
        self.load_seconds = Gauge(
            "lpa_model_load_seconds", "Time to load, verify and warm a model", ["model"], registry=r
        )
        self.model_state = Gauge("lpa_model_state", "1 for the model's current state", ["model", "state"], registry=r)
        self.backend = Gauge(
            "lpa_model_backend", "1 for the backend serving the model", ["model", "backend"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
