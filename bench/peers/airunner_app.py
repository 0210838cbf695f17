"""The design Livepeer's ai-runner uses, reproduced as a reference: FastAPI + uvicorn, one process per model.

What is kept from ai-runner (``runner/app/routes/*.py``, ``runner/app/routes/utils.py`` of livepeer/ai-worker,
now livepeer/ai-runner):

- one pipeline per process (ai-runner runs one container per model; go-livepeer starts one per entry);
- ``async def`` routes with ``Form``/``File`` parameters (multipart in), a ``Depends(get_pipeline)`` and an
  ``HTTPBearer(auto_error=False)`` token check against ``AUTH_TOKEN``, a ``model_id`` check;
- the pipeline is called **synchronously inside the ``async def`` route**, so inference runs on the event loop
  (the design of ``image_to_image`` and the other generate routes);
- the answer is ``{"images": [{"url": "data:image/png;base64,…", "seed": …, "nsfw": false}]}`` through
  ``response_model=ImageResponse`` (pydantic), and ``GET /health`` is a plain ``def`` returning ``{"status": "OK"}``.

What differs, on purpose: decoding, pre/post-processing and PNG encoding are the appliance's own (``serving.py``),
not ai-runner's ``Image.open(...).convert("RGB")`` and ``img.save(format="PNG")`` (compress level 6), so the
comparison is about serving. ``/segmentation`` has the upscale route's shape (ai-runner has no such route).

Run: ``python airunner_app.py --model waifu2x-upconv7 --port 8123 --model-dir var/models`` (uvicorn, one worker,
as ai-runner's Dockerfile starts it).
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from serving import Model

app = FastAPI()
_STATE: dict[str, Model] = {}


class Media(BaseModel):
    url: str = Field(..., description="The URL where the media can be accessed.")
    seed: int = Field(..., description="The seed used to generate the media.")
    nsfw: bool = Field(..., description="Whether the media was flagged as NSFW.")


class ImageResponse(BaseModel):
    images: list[Media] = Field(..., description="The generated images.")


def get_pipeline() -> Model:
    return _STATE["pipeline"]


def http_error(msg: str) -> dict[str, Any]:
    return {"detail": {"msg": msg}}


def _refused(token: HTTPAuthorizationCredentials | None, model_id: str, pipeline: Model) -> JSONResponse | None:
    auth_token = os.environ.get("AUTH_TOKEN")
    if auth_token and (not token or token.credentials != auth_token):
        return JSONResponse(
            status_code=401, headers={"WWW-Authenticate": "Bearer"}, content=http_error("Invalid bearer token.")
        )
    if model_id not in ("", pipeline.name):
        return JSONResponse(
            status_code=400,
            content=http_error(f"pipeline configured with {pipeline.name} but called with {model_id}."),
        )
    return None


async def _run(image: UploadFile, seed: int | None, pipeline: Model) -> dict[str, Any] | JSONResponse:
    seed = seed or random.randint(0, 2**32 - 1)  # noqa: S311 (ai-runner's seed, not a secret)
    try:
        url = pipeline.url(image.file.read())  # synchronous, on the event loop: ai-runner's design
    except Exception as exc:  # ai-runner answers any pipeline error with a 500 and a message
        return JSONResponse(status_code=500, content=http_error(f"Pipeline error: {exc}"))
    return {"images": [{"url": url, "seed": seed, "nsfw": False}]}


@app.post("/upscale", response_model=ImageResponse)
@app.post("/upscale/", response_model=ImageResponse, include_in_schema=False)
async def upscale(  # noqa: PLR0917 (ai-runner's signature: one parameter per form field)
    prompt: Annotated[str, Form()],
    image: Annotated[UploadFile, File()],
    model_id: Annotated[str, Form()] = "",
    seed: Annotated[int | None, Form()] = None,
    pipeline: Model = Depends(get_pipeline),  # noqa: B008 (FastAPI's dependency idiom, as ai-runner writes it)
    token: HTTPAuthorizationCredentials | None = Depends(HTTPBearer(auto_error=False)),  # noqa: B008
) -> Any:
    del prompt  # a 2× net takes no prompt
    return _refused(token, model_id, pipeline) or await _run(image, seed, pipeline)


@app.post("/segmentation", response_model=ImageResponse)
@app.post("/segmentation/", response_model=ImageResponse, include_in_schema=False)
async def segmentation(
    image: Annotated[UploadFile, File()],
    model_id: Annotated[str, Form()] = "",
    seed: Annotated[int | None, Form()] = None,
    pipeline: Model = Depends(get_pipeline),  # noqa: B008
    token: HTTPAuthorizationCredentials | None = Depends(HTTPBearer(auto_error=False)),  # noqa: B008
) -> Any:
    return _refused(token, model_id, pipeline) or await _run(image, seed, pipeline)


@app.get("/health")
@app.get("/health/", include_in_schema=False)
def health() -> dict[str, str]:
    return {"status": "OK"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--intra-op-threads", type=int, default=0)
    args = parser.parse_args()
    _STATE["pipeline"] = Model(args.model, args.model_dir, intra_op_threads=args.intra_op_threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port)  # uvicorn's defaults: one worker, access log on


if __name__ == "__main__":
    main()
