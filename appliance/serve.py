"""``lpa serve``: one uvicorn process serving the worker app."""

from __future__ import annotations

import ipaddress

import structlog
import uvicorn

from appliance.catalog import Catalog
from appliance.config import Node
from appliance.instances import WorkerInstance
from appliance.runtime import Runtime
from appliance.secrets import read_secret_file
from appliance.server.app import create_app
from appliance.server.logging import configure_logging

__all__ = ["serve"]

log = structlog.get_logger("appliance.serve")


def _is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def serve(node: Node, catalog: Catalog, *, instance: WorkerInstance, listen: tuple[str, int], allow_gpu: bool) -> int:
    configure_logging(node.worker.log_level)
    runtime = Runtime(node, catalog, allow_gpu=allow_gpu, gpu=instance.gpu)
    token = read_secret_file(node.worker.token_file, what="worker.token_file")
    orch_secret = (  # read only where the worker registers BYOC capabilities itself
        read_secret_file(node.orchestrator.orch_secret_file, what="orchestrator.orch_secret_file")
        if node.orchestrator.byoc_url
        else None
    )
    app = create_app(runtime, token=token, orch_secret=orch_secret, instance=instance)
    host, port = listen
    if token is None and not _is_loopback(host):
        log.warning(
            "listening beyond loopback without a bearer token: anyone who can reach it can use it",
            listen=f"{host}:{port}",
        )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    return 0
