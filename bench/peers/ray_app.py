"""Ray Serve serving the models on the CPU, set up as Ray Serve's documentation shows.

One application per model (``serve.run(app, name=…, route_prefix="/<model>")``), each a single deployment with a
FastAPI ingress (``@serve.deployment`` + ``@serve.ingress(app)``, the "Set Up FastAPI and HTTP" guide) whose
constructor loads the model and whose sync ``def`` route runs it (Ray Serve runs sync methods on a thread, off the
replica's event loop). Deployment options are Ray Serve's defaults (``num_replicas=1``,
``max_ongoing_requests=5``) plus ``ray_actor_options={"num_cpus": 1}``, so both models' replicas fit this host's
logical CPUs. ``ray.init()`` starts a local cluster with its default processes (GCS, raylet, dashboard, workers);
the HTTP proxy listens on loopback only. Liveness: the proxy's ``GET /-/healthz``.

No ``from __future__ import annotations`` here: the deployment class travels to its replica by value and FastAPI
must see real annotations there. Ray's own processes talk over ``127.0.0.1`` (``_node_ip_address``).

Requests: ``POST /<model>/infer``, multipart with an ``image`` file part; answer ``{"images": [{"url": …}]}``.
"""

import signal
import threading
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI, File, UploadFile
from ray import serve
from serving import Model, server_arguments


def build(name: str, model_dir: Path, intra_op_threads: int) -> Any:
    app = FastAPI()

    @serve.deployment(name=name, ray_actor_options={"num_cpus": 1})
    @serve.ingress(app)
    class ModelDeployment:
        def __init__(self) -> None:
            self.model = Model(name, model_dir, intra_op_threads=intra_op_threads)

        @app.post("/infer")
        def infer(self, image: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008 (FastAPI idiom)
            url = self.model.url(image.file.read())
            return {"images": [{"url": url, "seed": 0, "nsfw": False}]}

    return ModelDeployment.bind()


def main() -> None:
    parser = server_arguments(__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dashboard-port", type=int, required=True)
    parser.add_argument("--temp-dir", required=True, help="Ray's session folder (short: it holds Unix sockets)")
    args = parser.parse_args()
    ray.init(
        _temp_dir=args.temp_dir,
        _node_ip_address="127.0.0.1",
        dashboard_host="127.0.0.1",
        dashboard_port=args.dashboard_port,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        for name in args.models:
            serve.run(build(name, args.model_dir.resolve(), args.intra_op_threads), name=name, route_prefix=f"/{name}")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs handlers of its own
            signal.signal(sig, lambda *_: stop.set())
        print("ray-peer: all applications running", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
