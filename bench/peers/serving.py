"""The work every peer server does per request, taken from the appliance itself.

Each peer (ai-runner reference, Triton, Ray Serve, BentoML) runs in the peers' own virtual environment and
imports the appliance package from this working tree (``PYTHONPATH``), so every server does exactly what
``lpa serve`` does for one image: ``decode_image`` → ``pipeline.process`` (the appliance's pre-processing,
``session.run``, post-processing) → ``encode_png`` → a ``data:image/png;base64,…`` URL. The comparison is about
serving, not about pre/post-processing code.

The onnxruntime session is created exactly as the appliance's CPU rung creates it: ``OnnxRuntimeBackend`` with
``CPUExecutionProvider``, ``ORT_ENABLE_ALL`` and the same ``intra_op_threads``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the appliance package, from the working tree (it is not installed in this venv)
    sys.path.insert(0, str(REPO))

from appliance.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from appliance.catalog import load_catalog  # noqa: E402
from appliance.imaging import data_url, decode_image, encode_png  # noqa: E402
from appliance.modelstore import ModelStore  # noqa: E402
from appliance.pipelines import create_pipeline  # noqa: E402
from appliance.resources import bundled_catalog_dir  # noqa: E402

__all__ = [
    "ENV_MODELS",
    "ENV_MODEL_DIR",
    "ENV_THREADS",
    "Model",
    "data_url",
    "load_models",
    "models_from_env",
    "server_arguments",
]

CATALOG = load_catalog(bundled_catalog_dir())
MAX_PIXELS = 4_194_304  # the node file's default max_image_pixels
# How the benchmark tells a peer what to serve (BentoML's service module and Ray's replicas read these).
ENV_MODELS, ENV_MODEL_DIR, ENV_THREADS = "LPA_PEERS_MODELS", "LPA_PEERS_MODEL_DIR", "LPA_PEERS_INTRA_OP_THREADS"


class Model:
    """One catalog model with the appliance's pipeline on a CPU onnxruntime session."""

    def __init__(self, name: str, model_dir: Path, *, intra_op_threads: int = 0) -> None:
        manifest = CATALOG.get(name)
        self.name = name
        self.capability = manifest.capability
        path = ModelStore(model_dir).verified_path(manifest)
        backend = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"], intra_op_threads=intra_op_threads)
        self.pipeline = create_pipeline(manifest, backend)
        self.options = self.pipeline.options_type()
        self.pipeline.warmup()  # as the worker's `warm = true`

    def png(self, data: bytes) -> bytes:
        """PNG bytes in, PNG bytes out: decode, pre-process, session.run, post-process, encode."""
        image = decode_image(data, max_pixels=MAX_PIXELS)
        return encode_png(self.pipeline.process(image, self.options))

    def url(self, data: bytes) -> str:
        return data_url(self.png(data))


def load_models(names: list[str], model_dir: Path, intra_op_threads: int) -> dict[str, Model]:
    return {name: Model(name, model_dir, intra_op_threads=intra_op_threads) for name in names}


def models_from_env() -> tuple[list[str], Path, int]:
    names = [n for n in os.environ.get(ENV_MODELS, "").split(",") if n]
    return names, Path(os.environ[ENV_MODEL_DIR]), int(os.environ.get(ENV_THREADS, "0"))


def server_arguments(doc: str) -> argparse.ArgumentParser:
    """A peer server's command line, described by its docstring's first line: the models it serves, where their
    files are, onnxruntime's intra-op threads; the server adds its ports."""
    parser = argparse.ArgumentParser(description=doc.split("\n", 1)[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--intra-op-threads", type=int, default=0)
    return parser
