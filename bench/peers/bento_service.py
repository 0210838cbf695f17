"""BentoML serving the models on the CPU, set up as BentoML's documentation shows.

A class-based service (``@bentoml.service`` with ``resources={"cpu": "2"}`` and a ``traffic`` timeout, as in the
Services guide) whose ``__init__`` loads the models and whose ``@bentoml.api`` methods run them; defaults
otherwise (one worker, BentoML's default thread for sync APIs, no concurrency limit). The image arrives as a
multipart file part (``image: Path``, BentoML's file input type) and the answer is a JSON object
``{"images": [{"url": "data:image/png;base64,…"}]}``. Liveness: ``GET /livez``.

Started by the benchmark as ``bentoml serve bento_service:Peers --host 127.0.0.1 --port N`` in this folder; the
models to serve come from ``LPA_PEERS_MODELS`` / ``LPA_PEERS_MODEL_DIR`` / ``LPA_PEERS_INTRA_OP_THREADS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
from serving import Model, load_models, models_from_env

UPSCALE, SEGMENTATION = "waifu2x-upconv7", "u2netp"


def _answer(model: Model, image: Path) -> dict[str, Any]:
    return {"images": [{"url": model.url(image.read_bytes()), "seed": 0, "nsfw": False}]}


@bentoml.service(resources={"cpu": "2"}, traffic={"timeout": 300})
class Peers:
    def __init__(self) -> None:
        names, model_dir, threads = models_from_env()
        self.models = load_models(names, model_dir, threads)

    @bentoml.api
    def upscale(self, image: Path) -> dict[str, Any]:
        return _answer(self.models[UPSCALE], image)

    @bentoml.api
    def segmentation(self, image: Path) -> dict[str, Any]:
        return _answer(self.models[SEGMENTATION], image)
