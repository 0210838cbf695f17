"""``lpa serve``: one uvicorn process serving the worker app, draining on SIGTERM (server/drain.py)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import time

import structlog
import uvicorn

from appliance.catalog import Catalog
from appliance.config import Node
from appliance.instances import WorkerInstance
from appliance.runtime import Runtime
from appliance.secrets import read_secret_file
from appliance.server.app import create_app
from appliance.server.banner import announce_serving
from appliance.server.drain import DRAIN_TIMEOUT_S, Drain
from appliance.server.headers import header_deadline_protocol
from appliance.server.logging import configure_logging

__all__ = ["GRACEFUL_SHUTDOWN_S", "ListenError", "bind_listen_socket", "serve"]

log = structlog.get_logger("appliance.serve")

# After the drain: what uvicorn gives the connections still open (worker-wide routes; an inference request
# still running past DRAIN_TIMEOUT_S) before cancelling them.
GRACEFUL_SHUTDOWN_S = 5
_STARTUP_FAILURE = 3  # uvicorn.run's exit status when the server never started


class _DrainingServer(uvicorn.Server):
    """uvicorn, except that a stop signal first drains: uvicorn's own shutdown closes the listening socket at
    once, and go-livepeer would see new requests refused or reset instead of a status it can decode. A second
    SIGINT still forces the exit, as in uvicorn."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self._drain_until: float | None = None

    async def on_tick(self, counter: int) -> bool:
        stop = await super().on_tick(counter)
        if not stop or self.force_exit:
            return stop
        now = time.monotonic()
        if self._drain_until is None:  # the first tick after the signal
            self._drain_until = now + DRAIN_TIMEOUT_S
            self.drain.start()
            log.info("draining", in_flight=self.drain.in_flight, timeout_s=DRAIN_TIMEOUT_S)
        if self.drain.in_flight and now < self._drain_until:
            return False
        log.info("drained", in_flight=self.drain.in_flight)  # 0 unless the timeout ran out
        return True


def _is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


class ListenError(ValueError):
    """The worker cannot take its address (in use, not on this host, not permitted); nothing was loaded."""


def bind_listen_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else happens: a taken port is one clear error at once, not a
    uvicorn traceback after every model has loaded. Options as uvicorn sets them (SO_REUSEADDR)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        why = "the address is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise ListenError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def _http_address(host: str, port: int) -> str:
    """Where a client on this host reaches the socket (a wildcard bind is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 (mapping a wildcard away)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(node: Node, catalog: Catalog, *, instance: WorkerInstance, listen: tuple[str, int], allow_gpu: bool) -> int:
    host, port = listen
    sock = bind_listen_socket(host, port)
    configure_logging(node.worker.log_level)
    runtime = Runtime(node, catalog, allow_gpu=allow_gpu, gpu=instance.gpu)
    token = read_secret_file(node.worker.token_file, what="worker.token_file")
    orch_secret = (  # read only where the worker registers BYOC capabilities itself
        read_secret_file(node.orchestrator.orch_secret_file, what="orchestrator.orch_secret_file")
        if node.orchestrator.byoc_url
        else None
    )
    drain = Drain()
    address = _http_address(host, port)
    token_file = node.worker.token_file

    def on_ready(loaded: Runtime) -> None:
        announce_serving(loaded, address=address, token_file=token_file)

    app = create_app(runtime, token=token, orch_secret=orch_secret, instance=instance, drain=drain, on_ready=on_ready)
    if token is None and not _is_loopback(host):
        log.warning(
            "listening beyond loopback without a bearer token: anyone who can reach it can use it",
            listen=f"{host}:{port}",
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
        http=header_deadline_protocol(node.worker.header_timeout_seconds),
    )
    server = _DrainingServer(config, drain)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn re-raises SIGINT once it has shut down
        server.run(sockets=[sock])  # and SIGTERM likewise: the process ends by it, a clean stop for systemd
    return 0 if server.started else _STARTUP_FAILURE
