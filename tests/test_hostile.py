"""Hostile input against a real `lpa serve` with a bearer token: schemathesis fuzzing, seeded and bounded, with
the worker's own OpenAPI document (``GET /openapi.json``) and with the project's copy of the runner contract, and
the token looked for in everything the worker logged.

Each fuzz run sends at least 200 generated requests (positive and negative: schema-valid and schema-breaking)
and checks every answer: a status the document lists for that route, a content type it lists for that status,
a body its schema accepts, and no 5xx but the ``insufficient capacity`` that go-livepeer retries elsewhere.
The image zoo (formats, modes, sizes) is in test_imaging.py; the table of bad requests in test_bad_inputs.py.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.helpers import CONTRACT, ServedWorker, contract, golivepeer_multipart, png_bytes

pytestmark = pytest.mark.e2e

TOKEN = "hostile-token-5f0c1e7a9b2d4c6e8f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPSCALE_BASE = "/m/upscale/waifu2x-upconv7"
# The contract's routes this worker implements (under an entry's base path); the others are ai-runner's pipelines.
CONTRACT_ROUTES = ["/upscale", "/health", "/version", "/hardware/info", "/hardware/stats"]
MIN_CASES = 200
GET_EXAMPLES = 3  # per GET operation and mode: they take no parameters, only their headers vary


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, catalog_dir: Path) -> Iterator[ServedWorker]:
    directory = tmp_path_factory.mktemp("hostile")
    token_file = directory / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    served = ServedWorker(
        directory,
        model_dir,
        [  # every kind of route: the contract's upscale, and BYOC routes with options (depth) and without
            {"model": "waifu2x-upconv7", "capability": "upscale", "capacity": 1, "queue": 0},
            {"model": "ppocr-v4-det", "capability": "depth"},
            {"model": "tiny-style", "capability": "style-transfer"},
        ],
        catalog_dir=catalog_dir,
        token_file=str(token_file),
        intra_op_threads=1,
        max_image_pixels=128 * 128,  # generated images are often valid: bigger ones are refused, not inferred
    )
    try:
        served.wait_ready(headers=AUTH)
        yield served
    finally:
        served.stop()


def _fuzz(schema: Any, document: dict[str, Any], base_url: str, *, post_examples: int) -> int:
    """Every operation of ``schema``, positive then negative, seeded (``derandomize``), ``post_examples`` per
    POST operation and mode, each answer checked against ``document``; returns the cases sent."""
    from hypothesis import HealthCheck, Phase, given, settings  # noqa: PLC0415
    from hypothesis.errors import Unsatisfiable  # noqa: PLC0415
    from schemathesis import GenerationMode  # noqa: PLC0415

    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=post_examples if operation.method.upper() == "POST" else GET_EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            )
            def run(case: Any) -> None:
                nonlocal sent
                sent += 1
                response = case.call(base_url=base_url, headers=AUTH, timeout=60)
                try:
                    _conforms(document, case.operation.path, case.method, response)
                except AssertionError as failed:
                    curl = case.as_curl_command(headers=AUTH)
                    raise AssertionError(f"{failed}\nto reproduce: {curl[:2000]}") from None

            try:
                run()
            except Unsatisfiable:  # nothing in the request to break (no parameters or body)
                assert mode == GenerationMode.NEGATIVE and operation.method.upper() == "GET", operation.label
    return sent


def _conforms(document: dict[str, Any], path: str, method: str, response: Any) -> None:
    """The answer is one ``document`` lists for the operation: status, content type, body schema; and a 5xx is
    only ever busy."""
    responses = document["paths"][path][method.lower()]["responses"]
    status, body = response.status_code, response.content
    assert str(status) in responses, f"{method} {path} answered {status}; listed: {sorted(responses)}: {body[:300]!r}"
    media = (response.headers.get("content-type") or [""])[0].split(";", 1)[0]  # schemathesis: name → values
    listed = responses[str(status)]["content"]
    assert media in listed, f"{method} {path} {status} answered {media!r}; listed: {sorted(listed)}"
    if media == "application/json":
        schema = {**listed[media]["schema"], "components": document["components"]}
        jsonschema.validate(json.loads(body), schema)
    if status >= 500:
        assert "insufficient capacity" in json.loads(body)["detail"]["msg"], f"{method} {path}: {body[:300]!r}"


def _schemathesis() -> Any:
    return pytest.importorskip("schemathesis", reason="schemathesis (a dev dependency) fuzzes the worker's API")


def test_fuzz_with_the_workers_own_openapi_document(worker: ServedWorker) -> None:
    schemathesis = _schemathesis()
    document = httpx.get(f"{worker.url}/openapi.json", headers=AUTH).json()
    schema = schemathesis.openapi.from_dict(document)
    sent = _fuzz(schema, document, worker.url, post_examples=25)  # 3 POST and 19 GET operations: 264 cases
    assert sent >= MIN_CASES
    assert httpx.get(f"{worker.url}/health", headers=AUTH).json() == {"status": "OK"}


def test_fuzz_with_the_runner_contract_on_the_routes_it_implements(worker: ServedWorker) -> None:
    schemathesis = _schemathesis()
    document = contract()
    schema = schemathesis.openapi.from_path(CONTRACT).include(path=CONTRACT_ROUTES)
    # The entry's base path is the runner's root. One POST and four GET operations: 224 cases.
    sent = _fuzz(schema, document, worker.url + UPSCALE_BASE, post_examples=110)
    assert sent >= MIN_CASES


def test_the_token_never_reaches_the_log(worker: ServedWorker) -> None:
    """Last in this file: it stops the worker, so that its shutdown lines are searched too. Everything the
    worker wrote (stdout and stderr, the fuzz runs above included) is searched for the token."""
    url = worker.url
    body, content_type = golivepeer_multipart({"prompt": "x"}, "image", png_bytes(16, 16))
    upscale = f"{url}{UPSCALE_BASE}/upscale"
    form = {"Content-Type": content_type}
    answers = [
        httpx.post(upscale, content=body, headers=form | AUTH),  # the right token
        httpx.post(upscale, content=body, headers=form | {"Authorization": f"Bearer {TOKEN}x"}),  # near misses
        httpx.get(f"{url}/health", headers={"Authorization": f"Bearer x{TOKEN}"}),
        httpx.get(f"{url}/health", headers={"Authorization": TOKEN}),  # no scheme
        httpx.get(f"{url}/health", headers={"Authorization": f"Basic {TOKEN}", "Cookie": f"token={TOKEN}"}),
        httpx.get(f"{url}/health?token={TOKEN}&access_token={TOKEN}", headers=AUTH),  # the query string
        httpx.get(f"{url}/m/upscale/{TOKEN}/health", headers=AUTH),  # a path segment (404, not access-logged)
        httpx.get(f"{url}/health", headers=AUTH | {"X-Request-ID": TOKEN}),  # the id the log carries
        httpx.get(f"{url}/health", headers={"X-Api-Key": TOKEN, "X-Token": TOKEN}),
    ]
    for fields in ({"prompt": TOKEN}, {"prompt": "x", "token": TOKEN}, {"prompt": "x", "model_id": TOKEN}):
        multipart, boundary_type = golivepeer_multipart(fields, "image", png_bytes(16, 16))
        answers.append(httpx.post(upscale, content=multipart, headers={"Content-Type": boundary_type} | AUTH))
    answers.append(  # as the file part's bytes and its name, and in a content type the worker refuses
        httpx.post(upscale, files={"image": (TOKEN, TOKEN.encode(), "image/png")}, data={"prompt": "x"}, headers=AUTH)
    )
    answers.append(
        httpx.post(f"{url}/m/depth/ppocr-v4-det/depth", content=b"x", headers=AUTH | {"Content-Type": f"text/{TOKEN}"})
    )
    statuses = [a.status_code for a in answers]
    assert statuses[0] == 200 and statuses[1:5] == [401, 401, 401, 401], statuses
    assert statuses[6] == 404 and statuses[7] == 200 and statuses[8] == 401, statuses

    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(timeout=45)
    logged = worker.log.read_text()
    assert TOKEN not in logged
    # Not vacuous: the request id, which the log carries, did carry the token there, redacted.
    assert '"request_id": "[redacted]"' in logged
