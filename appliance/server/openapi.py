"""The worker's own OpenAPI document (``GET /openapi.json``), built from the types its handlers use.

Litestar's generator is off (``openapi_config=None``): the handlers read their multipart or raw bodies
themselves, so it would describe none of them. This document is made from the same msgspec types and status
lists the handlers use (``UpscaleForm``, each pipeline's options, the response structs, errors.py's lists), so it
cannot drift from the code; tests/test_hostile.py checks its contract routes against the runner contract and
fuzzes the worker with both documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from appliance import __version__
from appliance.pipelines import OPTIONS
from appliance.runtime import ServedEntry
from appliance.server.errors import BYOC_STATUSES, CONTRACT_STATUSES, INFO_STATUSES
from appliance.server.schemas import (
    HardwareInformation,
    HardwareStats,
    HealthCheck,
    HTTPError,
    HTTPValidationError,
    ImageResponse,
    ModelStatus,
    UpscaleForm,
    Version,
    WorkerIndex,
)

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{name}"
_BINARY = {"type": "string", "format": "binary"}
# Raw bodies the BYOC routes take besides multipart (any image/*; these are the formats decoded).
_RAW_TYPES = (
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/tiff",
    "application/octet-stream",
)
_PHRASES = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Validation Error",
    500: "Internal Server Error (busy: `insufficient capacity` in the message)",
}


def openapi_document(entries: Sequence[ServedEntry], *, secured: bool) -> dict[str, Any]:
    """OpenAPI 3.1 for the worker-wide routes and each entry's routes under its base path."""
    structs: list[type[msgspec.Struct]] = [
        HealthCheck,
        Version,
        HardwareInformation,
        HardwareStats,
        ImageResponse,
        ModelStatus,
        WorkerIndex,
        HTTPError,
        HTTPValidationError,
        UpscaleForm,
        *(OPTIONS[e.config.capability] for e in entries),
    ]
    _, components = msgspec.json.schema_components(structs, ref_template=_REF)
    paths: dict[str, Any] = {}
    for prefix, tag in [("", "worker"), *((e.base_path, e.label) for e in entries)]:
        for route, schema in (
            ("health", HealthCheck),
            ("version", Version),
            ("hardware/info", HardwareInformation),
            ("hardware/stats", HardwareStats),
        ):
            paths[f"{prefix}/{route}"] = {"get": _operation(tag, _json_responses(INFO_STATUSES, schema))}
    paths["/models"] = {
        "get": _operation("worker", _responses(INFO_STATUSES, {"application/json": _array_of(ModelStatus)}))
    }
    paths["/metrics"] = {"get": _operation("worker", _responses(INFO_STATUSES, {"text/plain": {"type": "string"}}))}
    paths["/openapi.json"] = {"get": _operation("worker", _responses(INFO_STATUSES, {"application/json": {}}))}
    paths["/"] = {"get": _operation("worker", _json_responses(INFO_STATUSES, WorkerIndex))}
    for entry in entries:
        if entry.config.capability == "upscale":
            paths[entry.inference_path] = {"post": _upscale(entry, components)}
        else:
            paths[entry.inference_path] = {"post": _byoc(entry, components)}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "livepeer-appliance worker", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }
    if secured:
        document["components"]["securitySchemes"] = {"HTTPBearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"HTTPBearer": []}]
    return document


def _upscale(entry: ServedEntry, components: dict[str, Any]) -> dict[str, Any]:
    """The contract's ``genUpscale``: multipart text fields (UpscaleForm) and the ``image`` file part."""
    form = _form_fields(components[UpscaleForm.__name__])
    body = {**form, "properties": {**form["properties"], "image": _BINARY}, "required": [*form["required"], "image"]}
    return {
        **_operation(entry.label, _json_responses(CONTRACT_STATUSES, ImageResponse)),
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}},
    }


def _byoc(entry: ServedEntry, components: dict[str, Any]) -> dict[str, Any]:
    """A capability reached through BYOC: multipart (``image`` + options) or a raw image body with the options
    as query parameters; answers the ImageResponse JSON, or the PNG itself with ``Accept: image/png``."""
    options = _form_fields(components[OPTIONS[entry.config.capability].__name__])
    properties = {**options["properties"], "model_id": {"type": "string"}}
    multipart = {"type": "object", "properties": {**properties, "image": _BINARY}, "required": ["image"]}
    content = {"multipart/form-data": {"schema": multipart}} | {t: {"schema": _BINARY} for t in _RAW_TYPES}
    responses = _json_responses(BYOC_STATUSES, ImageResponse)
    responses["200"]["content"]["image/png"] = {"schema": _BINARY}
    return {
        **_operation(entry.label, responses),
        "parameters": [{"name": name, "in": "query", "schema": schema} for name, schema in properties.items()],
        "requestBody": {"required": True, "content": content},
    }


def _form_fields(schema: dict[str, Any]) -> dict[str, Any]:
    """A struct's schema as form fields: an omitted field is how a form says None, so no ``null`` branch."""
    properties = {}
    for name, field in schema.get("properties", {}).items():
        branches = [b for b in field.get("anyOf", []) if b != {"type": "null"}]
        plain = {k: v for k, v in field.items() if k not in ("anyOf", "default")}
        properties[name] = {**plain, **branches[0]} if len(branches) == 1 else plain
    return {"type": "object", "properties": properties, "required": list(schema.get("required", []))}


def _operation(tag: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"tags": [tag], "responses": responses}


def _array_of(struct: type[msgspec.Struct]) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": _REF.format(name=struct.__name__)}}


def _json_responses(statuses: Iterable[int], ok: type[msgspec.Struct]) -> dict[str, Any]:
    return _responses(statuses, {"application/json": {"$ref": _REF.format(name=ok.__name__)}})


def _responses(statuses: Iterable[int], ok: dict[str, Any]) -> dict[str, Any]:
    """200 with ``ok`` (media type → schema); every other status with the contract's error bodies."""
    out: dict[str, Any] = {}
    for status in sorted(statuses):
        if status == 200:
            content = {media: {"schema": schema} for media, schema in ok.items()}
        else:
            error = HTTPValidationError if status == 422 else HTTPError
            content = {"application/json": {"schema": {"$ref": _REF.format(name=error.__name__)}}}
        out[str(status)] = {"description": _PHRASES[status], "content": content}
    return out
