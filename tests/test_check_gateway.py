"""`lpa check-gateway` against a gateway double answering /getNetworkCapabilities in the documented shape."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ADDRESS = "0x00000000000000000000000000000000000000cc"
NODE = f"""
[[models]]
model = "waifu2x-upconv7"
capability = "upscale"
capacity = 2
[[models]]
model = "ppocr-v4-det"
capability = "depth"
[orchestrator]
eth_acct_addr = "{ADDRESS}"
[[pricing]]
capability = "upscale"
unit = "frame"
width = 512
height = 512
price = "262144000"
currency = "wei"
[[pricing]]
capability = "depth"
unit = "second"
price = "2"
currency = "wei"
"""

# The shape a gateway returns (LIVEPEER.md §7): capability ids, per-capability model constraints, prices.
MATCHING = {
    "capabilities_names": {"30": "Upscale", "37": "depth"},
    "orchestrators": [
        {"address": "0x00000000000000000000000000000000000000dd", "orch_uri": "https://other:8935"},
        {
            "address": ADDRESS,
            "local_address": ADDRESS,
            "orch_uri": "https://203.0.113.7:8935",
            "capabilities": {
                "constraints": {
                    "PerCapability": {
                        "30": {
                            "models": {
                                "waifu2x-upconv7": {
                                    "warm": True,
                                    "capacity": 2,
                                    "runnerVersion": "0.1.0",
                                    "capacityInUse": 0,
                                },
                            }
                        }
                    }
                }
            },
            "capabilities_prices": [
                {"pricePerUnit": 1000, "pixelsPerUnit": 1, "capability": 30, "constraint": "waifu2x-upconv7"},
                {"pricePerUnit": 2, "pixelsPerUnit": 1, "capability": 37, "constraint": "depth"},
            ],
            "hardware": [],
        },
    ],
}


@pytest.fixture
def gateway() -> Iterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {"body": MATCHING}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(state["body"]).encode()
            self.send_response(200 if self.path == "/getNetworkCapabilities" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", state
    server.shutdown()
    server.server_close()


def _check(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    node = tmp_path / "node.toml"
    node.write_text(NODE)
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "check-gateway", "--node", str(node), url, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_matching_network_view(gateway: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, _ = gateway
    result = _check(tmp_path, url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MISMATCH" not in result.stdout and "the network sees this node as rendered" in result.stdout
    assert "1000 wei" in result.stdout and "2 wei" in result.stdout


@pytest.mark.parametrize(
    ("description", "change", "field"),
    [
        (
            "capacity differs",
            lambda o: o["capabilities"]["constraints"]["PerCapability"]["30"]["models"]["waifu2x-upconv7"].update(
                capacity=1
            ),
            "capacity",
        ),
        (
            "model missing",
            lambda o: o["capabilities"]["constraints"]["PerCapability"]["30"]["models"].clear(),
            "advertised",
        ),
        ("price differs", lambda o: o["capabilities_prices"][0].update(pricePerUnit=999), "price"),
        ("BYOC capability missing", lambda o: o["capabilities_prices"].pop(), "price"),
    ],
)
def test_mismatches_exit_1(
    gateway: tuple[str, dict[str, Any]], tmp_path: Path, description: str, change: Any, field: str
) -> None:
    url, state = gateway
    body = copy.deepcopy(MATCHING)
    change(body["orchestrators"][1])
    state["body"] = body
    result = _check(tmp_path, url)
    assert result.returncode == 1, result.stdout
    assert any(field in line and "MISMATCH" in line for line in result.stdout.splitlines()), result.stdout


def test_unknown_orchestrator_exit_2(gateway: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, _ = gateway
    result = _check(tmp_path, url, "--address", "0x00000000000000000000000000000000000000ee")
    assert result.returncode == 2 and "none with address" in result.stderr


def test_found_by_service_uri(gateway: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, _ = gateway
    result = _check(tmp_path, url, "--address", "", "--service-uri", "https://203.0.113.7:8935")
    assert result.returncode == 0, result.stdout + result.stderr
