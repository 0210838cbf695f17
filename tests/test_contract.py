"""Every implemented contract route, called the way go-livepeer calls it, checked against the contract file."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from litestar.testing import TestClient
from PIL import Image

from appliance import __version__
from tests.helpers import GRACE_HOPPER, assert_contract_response, contract, golivepeer_multipart, png_bytes

UPSCALE = "/m/upscale/waifu2x-upconv7"


def _decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


def test_contract_copy_is_the_pinned_release() -> None:
    assert contract()["info"]["version"] == "0.14.1"
    assert "/upscale" in contract()["paths"]


@pytest.mark.parametrize("route", ["/health", "/version", "/hardware/info", "/hardware/stats"])
@pytest.mark.parametrize("base", ["", UPSCALE])
@pytest.mark.parametrize("slash", ["", "/"])
def test_info_routes_match_contract(shared_client: TestClient[Any], base: str, route: str, slash: str) -> None:
    response = shared_client.get(base + route + slash)
    assert_contract_response(route, "get", response.status_code, response.headers["content-type"], response.json())
    assert response.status_code == 200


def test_entry_version_echoes_pipeline_and_model(shared_client: TestClient[Any]) -> None:
    """go-livepeer ignores a runner whose /version does not echo the entry's pipeline and model_id."""
    body = shared_client.get(f"{UPSCALE}/version").json()
    assert body == {"pipeline": "upscale", "model_id": "waifu2x-upconv7", "version": __version__}


def test_health_is_ok_after_load(shared_client: TestClient[Any]) -> None:
    assert shared_client.get("/health").json() == {"status": "OK"}
    assert shared_client.get(f"{UPSCALE}/health").json() == {"status": "OK"}


def test_upscale_as_golivepeer_sends_it(shared_client: TestClient[Any]) -> None:
    """Fields as go-livepeer's client writes them: %f floats, bools as words, file part as octet-stream."""
    fields = {
        "prompt": "a portrait",
        "model_id": "waifu2x-upconv7",
        "safety_check": "true",
        "seed": "42",
        "num_inference_steps": "1",
    }
    request_schema = contract()["components"]["schemas"]["Body_genUpscale"]
    assert set(fields) | {"image"} <= set(request_schema["properties"])
    assert set(request_schema["required"]) <= set(fields) | {"image"}

    source = Image.open(GRACE_HOPPER).crop((128, 100, 224, 196))  # 96×96 of the real photo
    buffer = io.BytesIO()
    source.save(buffer, format="JPEG", quality=92)
    body, content_type = golivepeer_multipart(fields, "image", buffer.getvalue())
    response = shared_client.post(f"{UPSCALE}/upscale", content=body, headers={"Content-Type": content_type})

    assert response.status_code == 200, response.text
    assert_contract_response("/upscale", "post", 200, response.headers["content-type"], response.json())
    media = response.json()["images"]
    assert len(media) == 1 and media[0]["seed"] == 42 and media[0]["nsfw"] is False
    upscaled = _decode_data_url(media[0]["url"])
    assert upscaled.size == (192, 192)
    # A real 2× net reproduces the photo: its downscale is close to the input (not noise, not a flat image).
    back = upscaled.convert("RGB").resize((96, 96), Image.Resampling.BICUBIC)
    diff = sum(abs(a - b) for a, b in zip(back.tobytes(), source.tobytes(), strict=True)) / (96 * 96 * 3)
    assert diff < 6, f"mean absolute difference {diff:.1f} per channel"


def test_upscale_without_seed_answers_a_seed(shared_client: TestClient[Any]) -> None:
    body, content_type = golivepeer_multipart({"prompt": ""}, "image", png_bytes(24, 16))
    response = shared_client.post(f"{UPSCALE}/upscale/", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert_contract_response("/upscale", "post", 200, response.headers["content-type"], response.json())
    assert _decode_data_url(response.json()["images"][0]["url"]).size == (48, 32)


def test_declared_statuses_are_the_contracts() -> None:
    """The statuses the worker narrows its upscale answers to are exactly those the contract lists."""
    from appliance.server.errors import CONTRACT_STATUSES, INFO_STATUSES  # noqa: PLC0415

    assert {int(s) for s in contract()["paths"]["/upscale"]["post"]["responses"]} == CONTRACT_STATUSES
    for route in ("/health", "/version", "/hardware/info", "/hardware/stats"):
        listed = {int(s) for s in contract()["paths"][route]["get"]["responses"]}
        assert listed <= INFO_STATUSES


def test_the_workers_openapi_document_lists_every_route_and_agrees_with_the_contract(
    shared_client: TestClient[Any],
) -> None:
    """``GET /openapi.json``: every route the app serves (trailing-slash twins aside, the index ``/`` kept) is
    documented, and the contract routes say what the contract says (statuses, the upscale form's fields and
    required ones)."""
    response = shared_client.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document = response.json()
    served = {
        (method.lower(), route.path)
        for route in shared_client.app.routes
        for method in getattr(route, "methods", ())
        if method not in ("HEAD", "OPTIONS") and (route.path == "/" or not route.path.endswith("/"))
    }
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert documented == served

    upscale = document["paths"][f"{UPSCALE}/upscale"]["post"]
    theirs = contract()["paths"]["/upscale"]["post"]
    assert set(upscale["responses"]) == set(theirs["responses"])
    form = upscale["requestBody"]["content"]["multipart/form-data"]["schema"]
    their_form = contract()["components"]["schemas"]["Body_genUpscale"]
    assert set(form["properties"]) == set(their_form["properties"])
    assert sorted(form["required"]) == sorted(their_form["required"])
    for name, field in their_form["properties"].items():
        assert (form["properties"][name]["type"], form["properties"][name].get("format")) == (
            field["type"],
            field.get("format"),
        ), name
    for route in ("/health", "/version", "/hardware/info", "/hardware/stats"):
        for base in ("", UPSCALE):
            ours = document["paths"][base + route]["get"]["responses"]
            assert set(contract()["paths"][route]["get"]["responses"]) <= set(ours), base + route
