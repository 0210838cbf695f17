"""``lpa serve``: one uvicorn process serving the worker app."""

from __future__ import annotations

import uvicorn

from appliance.catalog import Catalog
from appliance.config import Node
from appliance.runtime import Runtime
from appliance.server.app import create_app, read_token
from appliance.server.logging import configure_logging

__all__ = ["serve"]


def serve(node: Node, catalog: Catalog, *, listen: tuple[str, int], allow_gpu: bool) -> int:
    configure_logging(node.worker.log_level)
    runtime = Runtime(node, catalog, allow_gpu=allow_gpu)
    app = create_app(runtime, token=read_token(node.worker.token_file))
    host, port = listen
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
