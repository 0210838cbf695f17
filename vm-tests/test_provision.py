"""Provisioning a fresh, air-gapped Debian node with ``ansible/site.yml``, end to end, then living with it.

The node has no route out. Everything the play installs comes from the host: the appliance from a wheelhouse
(``./dev wheelhouse``) and the models from a bundle (both copied from the controller: the roles' offline options),
and go-livepeer's release tarball from an HTTP server on the host's side of the node's veth, checked against its
sha256 exactly as a real release is. go-livepeer's binary cannot be had here: the release is the double in
``tests/doubles/`` packaged as one (``tests/doubles/release.py``), so the unit, the rendered config and the
start-up handshake with the worker run for real.

The tests share one node and run in file order: converge, converge again (``changed=0``), look at it, then the
faults (``kill -9``, a price change, a wrong sha256, a reboot), and last an image bake on a node of its own.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from appliance.catalog import load_catalog
from appliance.resources import bundled_catalog_dir

from conftest import MakeNode
from node import REPO, TIMINGS, Node, Timing

ANSIBLE = REPO / "ansible"
VENV_BIN = REPO / ".venv" / "bin"
EXPOSURE_LIMITS = {"livepeer-worker@0.service": 2.0, "livepeer-orchestrator.service": 3.0}
WORKER = "livepeer-worker@0.service"
ORCHESTRATOR = "livepeer-orchestrator.service"
TOKEN = "vm-test-worker-token-0123456789"  # noqa: S105 (a test node's throwaway token)
ORCH_SECRET = "vm-test-orch-secret-0123456789"  # noqa: S105
MODELS = {"waifu2x-upconv7": "upscale", "u2netp": "segmentation"}  # served model → capability

NODE_FILE = """\
# The vm-tests' node: the example's shape with a provisioned node's paths, two real models on the CPU.
[worker]
listen = "127.0.0.1:8000"
gpus = [0]
token_file = "/etc/livepeer-appliance/secrets/worker.token"
model_dir = "/var/lib/livepeer-appliance/models"
intra_op_threads = 1

[[models]]
model = "waifu2x-upconv7"
capability = "upscale"
capacity = 1
queue = 2

[[models]]
model = "u2netp"
capability = "segmentation"
capacity = 1

[orchestrator]
network = "offchain"
service_addr = "127.0.0.1:8935"
orch_secret_file = "/etc/livepeer-appliance/secrets/orch-secret"
byoc_url = "http://127.0.0.1:8935"
byoc_interval_seconds = 5
config_dir = "/etc/livepeer-appliance/livepeer"

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
price = "0.002"
currency = "USD"

[engines]
cache_dir = "/var/cache/livepeer-appliance/engines"
"""


@dataclass
class Recap:
    ok: int
    changed: int
    failed: int
    unreachable: int
    returncode: int
    output: str


@dataclass
class Artifacts:
    wheelhouse: Path
    models: Path
    release_dir: Path
    release_sha256: str


def _timed(what: str, started: float, node: Node | None = None) -> None:
    _record(what, time.monotonic() - started, node)


def _record(what: str, seconds: float, node: Node | None = None) -> None:
    TIMINGS.append(Timing(what, seconds, node.name if node else ""))
    print(f"[vm-test] {what}: {seconds:.1f}s", file=sys.stderr)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """What an operator prepares on a networked machine for an air-gapped site: wheels, models, the release."""
    base = tmp_path_factory.mktemp("artifacts")
    started = time.monotonic()
    wheelhouse = base / "wheelhouse"
    subprocess.run([str(REPO / "dev"), "wheelhouse", str(wheelhouse), "3.13"], check=True, cwd=REPO)
    _timed("artifacts: wheelhouse", started)

    # The models: fetched and verified on the host (cached in var/models, as the unit tests do), then bundled.
    model_cache = REPO / "var" / "models"
    host_node = base / "host-node.toml"
    host_node.write_text(
        f'[worker]\nmodel_dir = "{model_cache}"\n'
        + "".join(f'[[models]]\nmodel = "{m}"\ncapability = "{c}"\n' for m, c in MODELS.items())
    )
    subprocess.run([str(VENV_BIN / "lpa"), "fetch-models", "--no-progress", "--node", str(host_node)], check=True)
    catalog = load_catalog(bundled_catalog_dir())
    bundle = base / "models"
    bundle.mkdir()
    for name in MODELS:
        shutil.copy(model_cache / catalog.get(name).file, bundle / catalog.get(name).file)

    release_dir = base / "release"
    built = subprocess.run(
        [sys.executable, "-m", "tests.doubles.release", str(release_dir)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout.split()
    return Artifacts(wheelhouse=wheelhouse, models=bundle, release_dir=release_dir, release_sha256=built[-1])


def _play(node: Node, workdir: Path, variables: dict[str, Any], *, what: str, args: tuple[str, ...] = ()) -> Recap:
    """Run ansible/site.yml against `node` as an operator would; returns its recap."""
    inventory = node.ansible_inventory(workdir / "inventory.yml")
    extra = workdir / "vars.json"
    extra.write_text(json.dumps(variables))
    started = time.monotonic()
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "site.yml", "-e", f"@{extra}", *args],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        env={"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "ANSIBLE_NOCOLOR": "1", "HOME": str(workdir)},
        timeout=1200,
        check=False,
    )
    _timed(what, started, node)
    (workdir / f"{what.replace(' ', '-')}.log").write_text(proc.stdout + proc.stderr)
    match = re.search(
        rf"{re.escape(node.name)}\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout
    )
    assert match, f"no recap for {node.name}:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    ok, changed, unreachable, failed = map(int, match.groups())
    return Recap(ok, changed, failed, unreachable, proc.returncode, proc.stdout + proc.stderr)


def _variables(artifacts: Artifacts, node_file: Path, release_url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "livepeer_node_file": str(node_file),
        "livepeer_worker_token": TOKEN,
        "livepeer_orch_secret": ORCH_SECRET,
        "livepeer_appliance_wheelhouse": str(artifacts.wheelhouse),
        "livepeer_models_bundle": str(artifacts.models),
        "livepeer_go_livepeer_url": release_url,
        "livepeer_go_livepeer_sha256": artifacts.release_sha256,
        # No Docker daemon runs inside a test container; go-livepeer's double only warns where the real one stops.
        "livepeer_go_livepeer_docker": False,
        **overrides,  # become: sudo, Ansible's default and ansible/README.md's (the image bake uses su)
    }


# A node without sudo, as ansible/README.md documents it: su, with a shell forced for the nologin user.
BECOME_SU = {"ansible_become_method": "su", "ansible_become_flags": "-s /bin/sh"}


@dataclass
class Provisioned:
    node: Node
    workdir: Path
    node_file: Path
    variables: dict[str, Any]

    def play(self, what: str, *args: str, **overrides: Any) -> Recap:
        return _play(self.node, self.workdir, {**self.variables, **overrides}, what=what, args=args)


@pytest.fixture(scope="module")
def provisioned(
    artifacts: Artifacts, root_tarball: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Provisioned]:
    workdir = tmp_path_factory.mktemp("provision")
    node_file = workdir / "node.toml"
    node_file.write_text(NODE_FILE.format(upscale_price="0.0005"))
    with Node(root_tarball) as node:
        node.boot()
        url = node.serve_http(artifacts.release_dir) + "livepeer-linux-amd64.tar.gz"
        yield Provisioned(node, workdir, node_file, _variables(artifacts, node_file, url))


def _main_pid(node: Node, unit: str) -> int:
    return int(node.ssh(["systemctl", "show", "--property=MainPID", "--value", unit]).stdout.strip())


def _png(width: int, height: int) -> bytes:
    from io import BytesIO  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    buffer = BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def _upscale_on_node(node: Node, *, timeout: float = 60.0) -> tuple[int, int]:
    """A real upscale request to the worker, on the node, as go-livepeer sends it; returns the answer's size."""
    image = base64.b64encode(_png(24, 16)).decode()
    script = f"""
set -eu
echo {image} | base64 -d > /tmp/vm-test.png
token=$(cat /etc/livepeer-appliance/secrets/worker.token)
curl -sS --fail-with-body --max-time {int(timeout)} -H "Authorization: Bearer $token" \
  -F prompt= -F 'image=@/tmp/vm-test.png;type=application/octet-stream' \
  http://127.0.0.1:8000/m/upscale/waifu2x-upconv7/upscale
"""
    answer = json.loads(node.ssh(script, timeout=timeout + 10).stdout)
    url = answer["images"][0]["url"]
    assert url.startswith("data:image/png;base64,")
    png = base64.b64decode(url.split(",", 1)[1])
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    return width, height


def _wait_answering(node: Node, limit_s: float) -> float:
    """Seconds until the worker's /health says OK (with its token); fails past `limit_s`."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        probe = node.ssh(
            'curl -s --max-time 2 -H "Authorization: Bearer $(cat /etc/livepeer-appliance/secrets/worker.token)" '
            "http://127.0.0.1:8000/health",
            check=False,
        )
        if probe.returncode == 0 and '"OK"' in probe.stdout:
            return time.monotonic() - started
        time.sleep(0.25)
    pytest.fail(f"the worker did not answer OK within {limit_s} s")


def test_converges_then_changes_nothing(provisioned: Provisioned) -> None:
    first = provisioned.play("converge")
    assert first.returncode == 0 and first.failed == 0, first.output[-6000:]
    assert first.changed > 0
    again = provisioned.play("idempotent rerun")
    assert again.returncode == 0 and again.changed == 0, again.output[-6000:]
    checked = provisioned.play("check mode on the converged node", "--check", "--diff")
    assert checked.returncode == 0 and checked.changed == 0, checked.output[-6000:]


def test_services_are_active_and_answer(provisioned: Provisioned) -> None:
    node = provisioned.node
    for unit in (WORKER, ORCHESTRATOR, "livepeer-models.service", "livepeer-appliance.target"):
        assert node.ssh(["systemctl", "is-active", unit], check=False).stdout.strip() == "active", unit
    assert node.ssh(["systemctl", "is-enabled", "livepeer-appliance.target"]).stdout.strip() == "enabled"
    # No NVIDIA device here: the engines oneshot is skipped by its condition, not failed.
    engines = node.ssh(["systemctl", "show", "--property=ConditionResult", "livepeer-engines.service"]).stdout
    assert engines.strip() == "ConditionResult=no"
    assert _upscale_on_node(node) == (48, 32)


def test_the_event_loop_runs_above_the_inference_threads(provisioned: Provisioned) -> None:
    """The unit's Nice=-5 reached the worker (set by systemd before it drops to the service user), and the
    inference threads, made by the upscale above, raised theirs back to 0: each thread's nice value from /proc."""
    node = provisioned.node
    pid = _main_pid(node, WORKER)
    script = f"for t in /proc/{pid}/task/*; do echo \"${{t##*/}} $(sed 's/.*) //' $t/stat | cut -d' ' -f17)\"; done"
    nice = {int(tid): int(value) for tid, value in (line.split() for line in node.ssh(script).stdout.splitlines())}
    assert nice[pid] == -5, nice  # the main thread: the event loop
    assert set(nice.values()) == {-5, 0}, nice  # inference (and onnxruntime's pool) at the system's priority


def test_go_livepeer_completed_its_handshake_with_the_worker(provisioned: Provisioned) -> None:
    status = json.loads(provisioned.node.ssh("curl -sS --fail http://127.0.0.1:7935/status").stdout)
    assert TOKEN not in json.dumps(status) and ORCH_SECRET not in json.dumps(status)
    [entry] = status["ai_models"]
    assert (entry["pipeline"], entry["model_id"], entry["url"]) == (
        "upscale",
        "waifu2x-upconv7",
        "http://127.0.0.1:8000/m/upscale/waifu2x-upconv7",
    )
    assert entry["status"] == "OK" and entry["version_echoes_entry"] is True and entry["token_set"] is True
    # The worker registered its BYOC capability with go-livepeer's service port, with the orchSecret.
    deadline = time.monotonic() + 15
    while "segmentation" not in status["byoc"] and time.monotonic() < deadline:
        time.sleep(1)
        status = json.loads(provisioned.node.ssh("curl -sS --fail http://127.0.0.1:7935/status").stdout)
    assert "segmentation" in status["byoc"], status["byoc"]


def test_units_verify_and_meet_their_exposure_targets_on_the_node(provisioned: Provisioned) -> None:
    node = provisioned.node
    units = [WORKER, ORCHESTRATOR, "livepeer-models.service", "livepeer-engines.service"]
    verify = node.ssh(["systemd-analyze", "verify", *units], check=False)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    for unit, limit in EXPOSURE_LIMITS.items():
        scored = node.ssh(["systemd-analyze", "security", "--no-pager", unit]).stdout
        exposure = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", scored).group(1))  # type: ignore[union-attr]
        assert exposure <= limit, f"{unit}: {exposure}"


def test_secrets_are_private_to_the_service_user(provisioned: Provisioned) -> None:
    listing = provisioned.node.ssh(
        "stat -c '%a %U %n' /etc/livepeer-appliance/secrets/* /etc/livepeer-appliance/livepeer/aiModels.json"
    ).stdout.splitlines()
    assert listing and all(line.startswith("600 livepeer ") for line in listing), listing


def test_a_killed_worker_is_back_and_answering_within_10_s(provisioned: Provisioned) -> None:
    node = provisioned.node
    before = _main_pid(node, WORKER)
    node.ssh(["kill", "-9", str(before)])
    _record("kill -9 to worker answering", _wait_answering(node, 10.0), node)
    assert _main_pid(node, WORKER) not in (0, before)
    assert _upscale_on_node(node) == (48, 32)


def test_a_price_change_restarts_only_go_livepeer(provisioned: Provisioned) -> None:
    node = provisioned.node
    worker, orchestrator = _main_pid(node, WORKER), _main_pid(node, ORCHESTRATOR)
    rendered = node.ssh("cat /etc/livepeer-appliance/livepeer/aiModels.json").stdout
    provisioned.node_file.write_text(NODE_FILE.format(upscale_price="0.0007"))
    recap = provisioned.play("price change")
    assert recap.returncode == 0 and recap.changed > 0, recap.output[-6000:]
    assert _main_pid(node, WORKER) == worker, "the worker does not read go-livepeer's prices: no restart"
    assert _main_pid(node, ORCHESTRATOR) not in (0, orchestrator)
    # 0.0005 → 0.0007 USD per 512² frame: the rendered price per pixel grows by exactly 7/5.
    before = json.loads(rendered, parse_float=Fraction)[0]["price_per_unit"]
    after = json.loads(node.ssh("cat /etc/livepeer-appliance/livepeer/aiModels.json").stdout, parse_float=Fraction)
    assert after[0]["price_per_unit"] == before * Fraction(7, 5)


def test_a_wrong_release_sha256_fails_before_touching_the_service(provisioned: Provisioned) -> None:
    node = provisioned.node
    orchestrator = _main_pid(node, ORCHESTRATOR)
    current = node.ssh(["readlink", "/opt/go-livepeer/current"]).stdout
    recap = provisioned.play("wrong sha256", livepeer_go_livepeer_sha256="0" * 64)
    assert recap.returncode != 0 and recap.failed > 0
    assert _main_pid(node, ORCHESTRATOR) == orchestrator
    assert node.ssh(["readlink", "/opt/go-livepeer/current"]).stdout == current
    assert node.ssh(["systemctl", "is-active", ORCHESTRATOR]).stdout.strip() == "active"


def test_everything_comes_back_after_a_reboot(provisioned: Provisioned) -> None:
    node = provisioned.node
    node.poweroff()
    started = time.monotonic()
    node.boot()
    _wait_answering(node, 120.0)
    _timed("reboot: boot to worker answering", started, node)
    for unit in (WORKER, ORCHESTRATOR):
        assert node.ssh(["systemctl", "is-active", unit], check=False).stdout.strip() == "active", unit
    assert _upscale_on_node(node) == (48, 32)


def test_an_image_baked_without_booting_comes_up_serving(
    artifacts: Artifacts, make_node: MakeNode, tmp_path: Path
) -> None:
    node_file = tmp_path / "node.toml"
    node_file.write_text(NODE_FILE.format(upscale_price="0.0005"))
    node = make_node()
    url = node.serve_http(artifacts.release_dir) + "livepeer-linux-amd64.tar.gz"
    node.start_unbooted_sshd()
    variables = _variables(artifacts, node_file, url, livepeer_units_start=False, **BECOME_SU)
    recap = _play(node, tmp_path, variables, what="bake")
    assert recap.returncode == 0 and recap.failed == 0, recap.output[-6000:]
    node.stop_unbooted()
    started = time.monotonic()
    node.boot()
    _wait_answering(node, 120.0)
    _timed("baked image: boot to worker answering", started, node)
    assert node.ssh(["systemctl", "is-active", ORCHESTRATOR], check=False).stdout.strip() == "active"
    assert _upscale_on_node(node) == (48, 32)
