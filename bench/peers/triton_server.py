"""NVIDIA Triton Inference Server through PyTriton, with Triton's dynamic batcher, serving the models on the CPU.

Set up as PyTriton's documentation shows (quick start, "Binding models", ``ModelConfig``/``DynamicBatcher``):
an inference callable decorated with ``@batch`` bound with ``triton.bind(...)``, one model instance per model,
``ModelConfig(max_batch_size=8, batcher=DynamicBatcher())`` (the batcher's defaults: batches as large as the
queue allows, no added delay). Each request carries the encoded image as one ``BYTES`` element and gets the PNG
data URL back as one ``BYTES`` element; the callable runs the appliance's pipeline on each image of the batch in
turn (the pipelines are single-image, and u2netp's graph has a fixed batch of 1).

The server listens on loopback only (HTTP, gRPC and metrics); clients use the KServe v2 HTTP protocol with
Triton's binary-tensor extension, as ``tritonclient`` does. Liveness: ``GET /v2/health/live``.
PyTriton's stub links ``libpython3.X.so``: the benchmark sets ``LD_LIBRARY_PATH`` to the interpreter's
``LIBDIR``, as PyTriton's installation page says for virtual environments.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from serving import Model, load_models, server_arguments

MAX_BATCH = 8


def infer_function(model: Model) -> Callable[..., dict[str, np.ndarray]]:
    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        urls = [model.url(bytes(item[0])).encode("ascii") for item in image]
        return {"url": np.array([[url] for url in urls], dtype=np.object_)}

    return infer


def main() -> None:
    parser = server_arguments(__doc__)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    models = load_models(args.models, args.model_dir, args.intra_op_threads)
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
    )
    with tempfile.TemporaryDirectory(prefix="lpa-peers-triton-") as tmp:
        # PyTriton creates the workspace itself (it must not exist yet) and removes it on stop
        triton_kwargs: dict[str, Any] = {"config": config, "workspace": str(Path(tmp) / "workspace")}
        with Triton(**triton_kwargs) as triton:
            for name, model in models.items():
                triton.bind(
                    model_name=name,
                    infer_func=infer_function(model),
                    inputs=[Tensor(name="image", dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name="url", dtype=bytes, shape=(1,))],
                    config=ModelConfig(max_batch_size=MAX_BATCH, batcher=DynamicBatcher()),
                    strict=True,
                )
            triton.serve()  # blocks; SIGINT stops Triton and the proxy backends


if __name__ == "__main__":
    main()
