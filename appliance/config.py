"""The node file: one TOML file that describes this node. This module holds its worker part.

Top-level tables are sections (``[worker]``, ``[[models]]``); later sections (orchestrator, pricing) are new
top-level tables, so adding them never reshapes what is here. Every struct rejects unknown keys, and every
error names the file and the path (``$.models[1].capacity``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from appliance.catalog import Capability
from appliance.engines.settings import EngineSettings
from appliance.livepeer.settings import OrchestratorSettings, PricingRule
from appliance.strict import ConfigError, StrictStruct, decode_toml_file, decode_toml_text

__all__ = [
    "DEFAULT_LISTEN",
    "BatchSettings",
    "ConfigError",
    "Node",
    "ServedModel",
    "WorkerSettings",
    "load_node",
    "load_node_text",
    "parse_listen",
]

DEFAULT_LISTEN = "127.0.0.1:8000"

# A model id becomes part of a URL path: segments of plain characters, none of them "." or "..".
ModelId = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/(?!\.\.?(/|$))[A-Za-z0-9._-]+)*$", max_length=128)
]


GpuIndex = Annotated[int, msgspec.Meta(ge=0, le=63)]


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) → (host, port); raises ValueError with the reason."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"listen address {value!r} must look like HOST:PORT, e.g. {DEFAULT_LISTEN}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"listen port {port} is outside 1..65535")
    host = host.removeprefix("[").removesuffix("]")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"listen host {host!r} must be an IP address or localhost") from None
    return host, port


class WorkerSettings(StrictStruct, frozen=True, kw_only=True):
    """How the inference worker serves: address, secrets, limits."""

    listen: str = DEFAULT_LISTEN
    token_file: str | None = None
    model_dir: str = "~/.cache/livepeer-appliance/models"
    catalog_dir: str | None = None
    intra_op_threads: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0
    # Added to the nice value of loading and inference threads, so that the event loop wins the CPU inside the
    # worker (0: same priority). The worker unit starts at Nice=-5, so by default inference runs at 0 (priority.py).
    inference_niceness: Annotated[int, msgspec.Meta(ge=0, le=19)] = 5
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 16 * 1024 * 1024
    # A request's whole body must arrive within this many seconds of its start; a client trickling its body
    # (slowloris) is cut with a 400 and a closed connection instead of holding a connection and the drain.
    body_timeout_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 30.0
    # A connection's next request head must be complete within this many seconds of the connection's start (or
    # of the previous answer), or the connection is closed: an idle or trickling client cannot hold one forever.
    header_timeout_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 10.0
    max_image_pixels: Annotated[int, msgspec.Meta(ge=64, le=1 << 28)] = 2048 * 2048
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # One worker instance per GPU index (livepeer-worker@N, port = listen's port + N); a CPU-only node lists [0].
    gpus: Annotated[list[GpuIndex], msgspec.Meta(min_length=1, max_length=64)] = msgspec.field(
        default_factory=lambda: [0]
    )

    def __post_init__(self) -> None:
        _, port = parse_listen(self.listen)
        if len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"worker.gpus lists a GPU twice: {self.gpus}")
        if port + max(self.gpus) > 65535:
            raise ValueError(f"listen port {port} + GPU index {max(self.gpus)} is past 65535")

    @property
    def model_path(self) -> Path:
        return Path(self.model_dir).expanduser()


class BatchSettings(StrictStruct, frozen=True, kw_only=True):
    """Dynamic batching of one model (appliance/batching.py): requests in its slots at once share a graph call."""

    # Largest batch: requests (rows) stacked into one graph call; at most the entry's capacity.
    max_size: Annotated[int, msgspec.Meta(ge=2, le=64)]
    # How long a batch's first request waits for others (a batch also closes as soon as nobody else can join).
    max_wait_ms: Annotated[float, msgspec.Meta(ge=0.1, le=1000.0)] = 5.0


class ServedModel(StrictStruct, frozen=True, kw_only=True):
    """One model this node serves, under one capability."""

    model: str
    capability: Capability
    model_id: ModelId | None = None
    capacity: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    queue: Annotated[int, msgspec.Meta(ge=0, le=256)] = 2
    warm: bool = True
    # Off (None) by default: on the CPU it does not pay (bench/batching.py); see node.example.toml.
    batch: BatchSettings | None = None

    def __post_init__(self) -> None:
        if self.batch is not None and self.batch.max_size > self.capacity:
            raise ValueError(
                f"model {self.served_id!r}: batch.max_size {self.batch.max_size} exceeds capacity {self.capacity}; "
                "a batch is made of requests holding a slot at once, so raise capacity or lower max_size"
            )

    @property
    def served_id(self) -> str:
        """The id go-livepeer and clients use for this model (the catalog name unless overridden)."""
        return self.model_id or self.model


class Node(StrictStruct, frozen=True, kw_only=True):
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    models: Annotated[list[ServedModel], msgspec.Meta(min_length=1)]
    orchestrator: OrchestratorSettings = msgspec.field(default_factory=OrchestratorSettings)
    engines: EngineSettings = msgspec.field(default_factory=EngineSettings)
    pricing: list[PricingRule] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        seen: set[tuple[str, str]] = set()
        for entry in self.models:
            key = (entry.capability, entry.served_id)
            if key in seen:
                raise ValueError(f"model_id {entry.served_id!r} is served twice for {entry.capability!r}")
            seen.add(key)
        rules: set[tuple[str, str | None]] = set()
        for rule in self.pricing:
            if (rule.capability, rule.model_id) in rules:
                raise ValueError(f"two pricing rules for {rule.capability!r} model {rule.model_id or '(all)'}")
            rules.add((rule.capability, rule.model_id))
            if rule.model_id is not None and (rule.capability, rule.model_id) not in seen:
                raise ValueError(f"pricing names model_id {rule.model_id!r}, not served for {rule.capability!r}")

    def price_for(self, entry: ServedModel) -> PricingRule | None:
        """The model's own rule, else its capability's, else None."""
        by_key = {(r.capability, r.model_id): r for r in self.pricing}
        return by_key.get((entry.capability, entry.served_id)) or by_key.get((entry.capability, None))


def load_node(path: Path) -> Node:
    return decode_toml_file(path, Node)


def load_node_text(text: str, *, source: str) -> Node:
    return decode_toml_text(text, Node, source=source)
