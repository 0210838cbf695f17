"""Worker instances (one per GPU in worker.gpus) and the fingerprints provisioning restarts services by."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import Node, load_node_text
from appliance.fingerprints import fingerprint
from appliance.instances import instance_for, worker_instances
from appliance.livepeer.render import render
from appliance.strict import ConfigError

NODE = """
[worker]
listen = "{listen}"
gpus = {gpus}
token_file = "{token}"

[[models]]
model = "waifu2x-upconv7"
capability = "upscale"

[[models]]
model = "u2netp"
capability = "segmentation"

[orchestrator]
config_dir = "{out}"
byoc_url = "https://127.0.0.1:8935"
orch_secret_file = "{token}"

[[pricing]]
capability = "upscale"
unit = "frame"
width = 512
height = 512
price = "{upscale_price}"
currency = "USD"

[[pricing]]
capability = "segmentation"
unit = "second"
price = "{segmentation_price}"
currency = "USD"
"""


def _node(tmp_path: Path, **overrides: str) -> Node:
    token = tmp_path / "token"
    if not token.exists():
        token.write_text("tok-1\n")
        token.chmod(0o600)
    values = {
        "listen": "127.0.0.1:9000",
        "gpus": "[0, 2]",
        "token": str(token),
        "out": str(tmp_path / "out"),
        "upscale_price": "0.0005",
        "segmentation_price": "0.002",
    }
    return load_node_text(NODE.format(**{**values, **overrides}), source="node.toml")


def test_one_instance_per_gpu_on_its_own_port(tmp_path: Path) -> None:
    instances = worker_instances(_node(tmp_path))
    assert [(i.gpu, i.port, i.url, i.unit) for i in instances] == [
        (0, 9000, "http://127.0.0.1:9000", "livepeer-worker@0.service"),
        (2, 9002, "http://127.0.0.1:9002", "livepeer-worker@2.service"),
    ]
    assert instance_for(_node(tmp_path), None).gpu == 0
    with pytest.raises(ConfigError, match=r"GPU 1 is not in the node file's worker.gpus \(0, 2\)"):
        instance_for(_node(tmp_path), 1)


def test_wildcard_listen_is_reached_on_loopback(tmp_path: Path) -> None:
    assert [i.url for i in worker_instances(_node(tmp_path, listen="[::]:9000", gpus="[1]"))] == ["http://[::1]:9001"]


@pytest.mark.parametrize(
    ("gpus", "message"),
    [
        ("[]", r"length >= 1 - at `\$.worker.gpus`"),
        ("[0, 0]", "lists a GPU twice"),
        ("[64]", "<= 63"),
    ],
)
def test_bad_gpu_lists_are_refused(tmp_path: Path, gpus: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _node(tmp_path, gpus=gpus)


def test_render_gives_go_livepeer_every_instance(tmp_path: Path) -> None:
    files = {f.name: f for f in render(_node(tmp_path), out_dir=tmp_path / "out", source="node.toml").files}
    urls = [entry["url"] for entry in json.loads(files["aiModels.json"].content)]
    assert urls == [
        "http://127.0.0.1:9000/m/upscale/waifu2x-upconv7",
        "http://127.0.0.1:9002/m/upscale/waifu2x-upconv7",
    ]
    byoc = json.loads(files["byoc.json"].content)
    assert [entry["url"] for entry in byoc] == [
        "http://127.0.0.1:9000/m/segmentation/u2netp",
        "http://127.0.0.1:9002/m/segmentation/u2netp",
    ]
    # One name, one id per instance: go-livepeer versions that key runners by id keep both GPUs' runners.
    assert {entry["name"] for entry in byoc} == {"segmentation"}
    assert [entry["id"] for entry in byoc] == [f"segmentation@{entry['url']}" for entry in byoc]


@pytest.mark.parametrize(
    ("description", "change", "worker_changes", "orchestrator_changes"),
    [
        ("nothing", {}, False, False),
        ("an upscale price: only go-livepeer reads it", {"upscale_price": "0.0006"}, False, True),
        ("a BYOC price: the worker registers it", {"segmentation_price": "0.003"}, True, True),
        ("a new GPU: a new instance and its entries", {"gpus": "[0, 1, 2]"}, True, True),
    ],
)
def test_fingerprints_change_only_with_their_service_inputs(
    tmp_path: Path, description: str, change: dict[str, str], worker_changes: bool, orchestrator_changes: bool
) -> None:
    before, after = _node(tmp_path), _node(tmp_path, **change)
    for service, expected in (("worker", worker_changes), ("orchestrator", orchestrator_changes)):
        changed = fingerprint(before, service, source="n") != fingerprint(after, service, source="n")
        assert changed == expected, f"{description}: {service}"


def test_a_new_token_changes_both_fingerprints(tmp_path: Path) -> None:
    node = _node(tmp_path)
    before = {s: fingerprint(node, s, source="n") for s in ("worker", "orchestrator")}
    (tmp_path / "token").write_text("tok-2\n")
    assert all(fingerprint(node, s, source="n") != before[s] for s in ("worker", "orchestrator"))  # type: ignore[arg-type]
    assert "tok-2" not in "".join(before.values())


def test_node_command_prints_instances_and_fingerprints(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    node = _node(tmp_path)  # writes the token file
    path.write_text(
        NODE.format(
            listen="127.0.0.1:9000",
            gpus="[0, 2]",
            token=tmp_path / "token",
            out=tmp_path / "out",
            upscale_price="0.0005",
            segmentation_price="0.002",
        )
    )
    lpa = [sys.executable, "-m", "appliance.cli"]
    shown = subprocess.run([*lpa, "node", "instances", "--node", str(path)], capture_output=True, text=True, check=True)
    assert [row["unit"] for row in json.loads(shown.stdout)] == [
        "livepeer-worker@0.service",
        "livepeer-worker@2.service",
    ]
    worker = subprocess.run(
        [*lpa, "node", "fingerprint", "worker", "--node", str(path)], capture_output=True, text=True, check=True
    )
    assert worker.stdout.strip() == fingerprint(node, "worker", source=str(path))
