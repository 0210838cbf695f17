"""The worker's behaviour around inference: auth, capacity, load states, metrics, logs."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.catalog import load_catalog
from appliance.config import load_node
from appliance.runtime import Runtime
from appliance.server.app import create_app
from tests.conftest import AppFactory
from tests.helpers import golivepeer_multipart, png_bytes, write_node

UPSCALE = "/m/upscale/waifu2x-upconv7"
SEGMENT = "/m/segmentation/u2netp"


def _upscale(client: TestClient[Any], image: bytes, **headers: str) -> Any:
    body, content_type = golivepeer_multipart({"prompt": "x"}, "image", image)
    return client.post(f"{UPSCALE}/upscale", content=body, headers={"Content-Type": content_type, **headers})


class TestBearerToken:
    TOKEN = "s3cret-token-for-tests"

    @pytest.mark.parametrize("route", ["/health", f"{UPSCALE}/health", f"{UPSCALE}/version", "/metrics", "/models"])
    def test_every_route_requires_it(self, make_client: AppFactory, route: str) -> None:
        client = make_client([{"model": "waifu2x-upconv7", "capability": "upscale"}], token=self.TOKEN)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": self.TOKEN}):
            response = client.get(route, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json() == {"detail": {"msg": "missing or invalid bearer token"}}
        assert client.get(route, headers={"Authorization": f"Bearer {self.TOKEN}"}).status_code == 200

    def test_inference_with_token(self, make_client: AppFactory) -> None:
        client = make_client([{"model": "waifu2x-upconv7", "capability": "upscale"}], token=self.TOKEN)
        assert _upscale(client, png_bytes(16, 16)).status_code == 401
        assert _upscale(client, png_bytes(16, 16), Authorization=f"Bearer {self.TOKEN}").status_code == 200


class TestCapacity:
    def test_busy_is_500_insufficient_capacity_and_health_answers(self, make_client: AppFactory) -> None:
        """capacity 1, queue 0: while one upscale runs, a second is refused at once and /health still answers."""
        client = make_client([{"model": "waifu2x-upconv7", "capability": "upscale", "capacity": 1, "queue": 0}])
        results: dict[str, Any] = {}
        slow = png_bytes(512, 512)  # several seconds of waifu2x on a CPU

        def first() -> None:
            results["first"] = _upscale(client, slow)

        thread = threading.Thread(target=first)
        thread.start()
        busy_seen = health_during = None
        for _ in range(400):
            models = client.get("/models").json()
            if models[0]["in_flight"] == 1:
                busy_seen = _upscale(client, png_bytes(16, 16))
                health_during = client.get(f"{UPSCALE}/health")
                still_running = client.get("/models").json()[0]["in_flight"] == 1
                break
            time.sleep(0.01)
        thread.join()
        assert busy_seen is not None, "the first request never started"
        assert busy_seen.status_code == 500
        assert "insufficient capacity" in busy_seen.json()["detail"]["msg"]
        assert health_during is not None and health_during.json() == {"status": "OK"}
        assert still_running, "health was answered only after inference ended"
        assert results["first"].status_code == 200
        assert _upscale(client, png_bytes(16, 16)).status_code == 200  # the slot was released


class TestLoadStates:
    def test_loading_then_ok(
        self,
        make_client: AppFactory,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        model_dir: Path,
        catalog_dir: Path,
    ) -> None:
        node = load_node(
            write_node(
                tmp_path / "n.toml",
                model_dir=model_dir,
                catalog_dir=catalog_dir,
                models=[{"model": "waifu2x-upconv7", "capability": "upscale"}],
            )
        )
        runtime = Runtime(node, load_catalog(catalog_dir), allow_gpu=False)
        gate = threading.Event()
        real_load_all = runtime.load_all

        def gated_load_all() -> None:
            gate.wait(30)
            real_load_all()

        monkeypatch.setattr(runtime, "load_all", gated_load_all)
        with TestClient(create_app(runtime, token=None)) as client:
            assert client.get("/health").json() == {"status": "LOADING"}
            assert client.get(f"{UPSCALE}/health").json() == {"status": "LOADING"}
            busy = _upscale(client, png_bytes(16, 16))
            assert busy.status_code == 500 and "insufficient capacity" in busy.json()["detail"]["msg"]
            gate.set()
            assert runtime.loaded.wait(60)
            assert client.get("/health").json() == {"status": "OK"}
            assert _upscale(client, png_bytes(16, 16)).status_code == 200

    def test_corrupt_model_is_error_while_others_serve(
        self, tmp_path: Path, model_dir: Path, catalog_dir: Path
    ) -> None:
        broken_dir = tmp_path / "models"
        broken_dir.mkdir()
        for name in ("waifu2x-upconv7-scale2x.onnx", "u2netp.onnx"):
            shutil.copy(model_dir / name, broken_dir / name)
        data = bytearray((broken_dir / "u2netp.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (broken_dir / "u2netp.onnx").write_bytes(bytes(data))
        node = load_node(
            write_node(
                tmp_path / "n.toml",
                model_dir=broken_dir,
                catalog_dir=catalog_dir,
                models=[
                    {"model": "waifu2x-upconv7", "capability": "upscale"},
                    {"model": "u2netp", "capability": "segmentation"},
                ],
            )
        )
        runtime = Runtime(node, load_catalog(catalog_dir), allow_gpu=False)
        with TestClient(create_app(runtime, token=None, load_in_background=False)) as client:
            assert client.get(f"{SEGMENT}/health").json() == {"status": "ERROR"}
            assert client.get("/health").json() == {"status": "ERROR"}
            assert client.get(f"{UPSCALE}/health").json() == {"status": "OK"}
            status = {m["model"]: m for m in client.get("/models").json()}
            assert "sha256" in status["u2netp"]["error"] and status["u2netp"]["status"] == "ERROR"
            response = client.post(
                f"{SEGMENT}/segmentation", content=png_bytes(16, 16), headers={"Content-Type": "image/png"}
            )
            assert response.status_code == 500 and "failed to load" in response.json()["detail"]["msg"]
            assert _upscale(client, png_bytes(16, 16)).status_code == 200


def test_metrics_count_requests_and_time_inference(shared_client: TestClient[Any]) -> None:
    assert _upscale(shared_client, png_bytes(16, 16)).status_code == 200
    text = shared_client.get("/metrics").text
    assert 'lpa_requests_total{route="upscale:waifu2x-upconv7:upscale",status="200"}' in text
    assert 'lpa_inference_seconds_count{model="upscale/waifu2x-upconv7"}' in text
    assert 'lpa_model_state{model="upscale/waifu2x-upconv7",state="OK"} 1.0' in text
    assert 'lpa_in_flight{model="upscale/waifu2x-upconv7"} 0.0' in text
    body, content_type = golivepeer_multipart({"prompt": "x", "model_id": "other"}, "image", png_bytes(8, 8))
    shared_client.post(f"{UPSCALE}/upscale", content=body, headers={"Content-Type": content_type})
    shared_client.post(f"{UPSCALE}/upscale", content=b"{}", headers={"Content-Type": "application/json"})
    text = shared_client.get("/metrics").text
    assert 'lpa_errors_total{reason="bad_request",route="upscale:waifu2x-upconv7:upscale"}' in text
    assert 'lpa_errors_total{reason="validation",route="upscale:waifu2x-upconv7:upscale"}' in text
    assert 'lpa_queued{model="segmentation/u2netp"} 0.0' in text
    assert 'lpa_model_backend{backend="onnxruntime-cpu",model="upscale/waifu2x-upconv7"} 1.0' in text


def test_request_id_is_echoed_or_made(shared_client: TestClient[Any]) -> None:
    assert shared_client.get("/health", headers={"X-Request-ID": "job-42"}).headers["x-request-id"] == "job-42"
    made = shared_client.get("/health", headers={"X-Request-ID": "bad id\nwith newline"}).headers["x-request-id"]
    assert made != "bad id\nwith newline" and len(made) == 32


def test_logs_are_json_without_secrets(make_client: AppFactory, capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.server.logging import configure_logging  # noqa: PLC0415

    configure_logging("info")
    token = "never-log-this-token"
    client = make_client([{"model": "waifu2x-upconv7", "capability": "upscale"}], token=token)
    capsys.readouterr()
    _upscale(client, png_bytes(16, 16), Authorization=f"Bearer {token}")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("event") == "request"]
    assert access and access[-1]["status"] == 200 and access[-1]["request_id"]
    assert all(token not in json.dumps(line) for line in lines)


def test_unmatched_paths_and_methods_are_logged_and_counted(
    make_client: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from appliance.server.logging import configure_logging  # noqa: PLC0415

    configure_logging("info")
    client = make_client([{"model": "waifu2x-upconv7", "capability": "upscale"}])
    capsys.readouterr()
    assert client.get("/no/such/route", headers={"X-Request-ID": "lost-404"}).status_code == 404
    assert client.post("/health", headers={"X-Request-ID": "wrong-405"}).status_code == 405
    access = {
        line["request_id"]: line
        for line in map(json.loads, filter(lambda text: text.startswith("{"), capsys.readouterr().err.splitlines()))
        if line.get("event") == "request"
    }
    assert (access["lost-404"]["status"], access["lost-404"]["path"]) == (404, "/no/such/route")
    assert (access["wrong-405"]["status"], access["wrong-405"]["method"]) == (405, "POST")
    text = client.get("/metrics").text
    assert 'lpa_requests_total{route="unmatched",status="404"} 1.0' in text
    assert 'lpa_requests_total{route="unmatched",status="405"} 1.0' in text  # no handler was matched
