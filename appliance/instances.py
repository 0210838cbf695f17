"""Worker instances: one ``lpa serve`` per GPU the node file lists (``worker.gpus``), each on its own port.

Instance ``N`` is the unit ``livepeer-worker@N.service``: it sees only GPU ``N`` (``CUDA_VISIBLE_DEVICES=N``) and
listens on ``worker.listen``'s port + N. go-livepeer reaches each instance at its own URL (one aiModels.json entry
per instance: go-livepeer keys external runners by URL and spreads requests over them).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from appliance.config import Node, parse_listen
from appliance.strict import ConfigError

__all__ = ["WorkerInstance", "instance_for", "worker_instances"]

UNIT_TEMPLATE = "livepeer-worker@{gpu}.service"


@dataclass(frozen=True)
class WorkerInstance:
    gpu: int
    host: str
    port: int
    url: str  # where go-livepeer (and BYOC registrations) reach this instance

    @property
    def unit(self) -> str:
        return UNIT_TEMPLATE.format(gpu=self.gpu)

    @property
    def listen(self) -> tuple[str, int]:
        return self.host, self.port


def _base_url(node: Node) -> tuple[str, str, int]:
    """(scheme, host, port) go-livepeer uses for instance 0: orchestrator.worker_url, else the listen address."""
    if node.orchestrator.worker_url:
        parts = urlsplit(node.orchestrator.worker_url)
        default_port = 443 if parts.scheme == "https" else 80
        return parts.scheme, parts.hostname or "", parts.port or default_port
    host, port = parse_listen(node.worker.listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 (mapping a wildcard away)
    return "http", host, port


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def worker_instances(node: Node) -> list[WorkerInstance]:
    """Every instance the node file describes, in ``worker.gpus`` order."""
    host, port = parse_listen(node.worker.listen)
    scheme, url_host, url_port = _base_url(node)
    return [
        WorkerInstance(gpu=gpu, host=host, port=port + gpu, url=_url(scheme, url_host, url_port + gpu))
        for gpu in node.worker.gpus
    ]


def instance_for(node: Node, gpu: int | None) -> WorkerInstance:
    """Instance ``gpu``, or the first one when ``gpu`` is None; a GPU the node file does not list is a ConfigError."""
    instances = worker_instances(node)
    if gpu is None:
        return instances[0]
    for instance in instances:
        if instance.gpu == gpu:
            return instance
    listed = ", ".join(str(i.gpu) for i in instances)
    raise ConfigError(f"GPU {gpu} is not in the node file's worker.gpus ({listed}): no worker instance for it")
