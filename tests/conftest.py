"""Fixtures: the real models (fetched once through the real fetcher), a tiny style model, worker apps."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from litestar.testing import TestClient
from onnx import TensorProto, helper, numpy_helper

from appliance.catalog import load_catalog
from appliance.config import load_node
from appliance.fetch import fetch_models
from appliance.modelstore import ModelStore
from appliance.resources import bundled_catalog_dir
from appliance.runtime import Runtime
from appliance.server.app import create_app
from tests.helpers import REPO, write_node, write_style_manifest

REAL_MODELS = ("waifu2x-upconv7", "waifu2x-cunet", "u2netp", "ppocr-v4-det")
STYLE_SIZE = 64


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real model files, fetched and verified once (set LPA_TEST_MODEL_DIR to share a cache)."""
    directory = Path(os.environ.get("LPA_TEST_MODEL_DIR") or REPO / "var" / "models")
    fetch_models(load_catalog(bundled_catalog_dir()), REAL_MODELS, ModelStore(directory), progress=False)
    return directory


def make_style_model(path: Path) -> None:
    """A tiny fast-neural-style stand-in (random weights are fine: the test checks plumbing, not art).

    Same interface as the model zoo's: ``input1`` float32 [1, 3, H, W] in 0..255 → ``output1`` in 0..255.
    """
    rng = np.random.default_rng(7)
    weight = numpy_helper.from_array(rng.normal(0, 0.3, (3, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.full(3, 20.0, dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input1", "w", "b"], ["output1"], pads=[1, 1, 1, 1])],
        "tiny-style",
        [helper.make_tensor_value_info("input1", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, 3, "h", "w"])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """The bundled catalog plus a ``tiny-style`` manifest whose ``file`` source is a model made here."""
    directory = tmp_path_factory.mktemp("catalog")
    for manifest in bundled_catalog_dir().glob("*.toml"):
        shutil.copy(manifest, directory)
    model = directory / "tiny-style.onnx"
    make_style_model(model)
    description = "A one-layer style-transfer stand-in made by the tests"
    write_style_manifest(directory, "tiny-style", model, description=description, size=STYLE_SIZE)
    fetch_models(load_catalog(directory), ["tiny-style"], ModelStore(model_dir), progress=False)
    return directory


DEFAULT_ENTRIES: list[dict[str, Any]] = [
    {"model": "waifu2x-upconv7", "capability": "upscale", "capacity": 1, "queue": 1},
    {"model": "u2netp", "capability": "segmentation"},
    {"model": "ppocr-v4-det", "capability": "depth"},
    {"model": "tiny-style", "capability": "style-transfer"},
]

AppFactory = Callable[..., TestClient[Any]]


@pytest.fixture
def make_client(tmp_path: Path, model_dir: Path, catalog_dir: Path) -> Iterator[AppFactory]:
    """Build an in-process worker (models loaded before the first request) with the given entries/settings."""
    clients: list[TestClient[Any]] = []

    def factory(
        entries: list[dict[str, Any]] | None = None, *, token: str | None = None, **worker: Any
    ) -> TestClient[Any]:
        node_file = write_node(
            tmp_path / f"node{len(clients)}.toml",
            model_dir=model_dir,
            catalog_dir=catalog_dir,
            models=entries or DEFAULT_ENTRIES,
            **worker,
        )
        node = load_node(node_file)
        runtime = Runtime(node, load_catalog(catalog_dir), allow_gpu=False)
        client = TestClient(create_app(runtime, token=token, load_in_background=False))
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared_client(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, catalog_dir: Path
) -> Iterator[TestClient[Any]]:
    """One worker with every capability, small limits for bad-input tests, shared by a module's tests."""
    node_file = write_node(
        tmp_path_factory.mktemp("node") / "node.toml",
        model_dir=model_dir,
        catalog_dir=catalog_dir,
        models=DEFAULT_ENTRIES,
        max_body_bytes=1_000_000,
        max_image_pixels=1_048_576,
    )
    runtime = Runtime(load_node(node_file), load_catalog(catalog_dir), allow_gpu=False)
    with TestClient(create_app(runtime, token=None, load_in_background=False)) as client:
        yield client
