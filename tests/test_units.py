"""The systemd units: generated from their one source, hardened to the exposure targets, and valid for systemd."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "systemd"
# The targets of the provisioning issue: exposure as `systemd-analyze security --offline` scores it.
EXPOSURE_LIMITS = {
    "livepeer-worker@.service": 2.0,
    "livepeer-orchestrator.service": 3.0,
    "livepeer-models.service": 2.0,
    "livepeer-engines.service": 2.0,
}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_units", SYSTEMD / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    return path


def _exposure(unit_file: Path) -> float:
    result = subprocess.run(
        [_systemd_analyze(), "security", "--offline=yes", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        cwd=unit_file.parent,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_committed_unit_files_are_what_units_toml_generates() -> None:
    generator = _generator()
    generated = generator.render_units(generator.load_units())
    committed = {path.name: path.read_text() for path in SYSTEMD.iterdir() if path.suffix in (".service", ".target")}
    assert committed == generated, "run: python3 systemd/generate.py"


def test_every_service_is_unprivileged_and_sandboxed() -> None:
    generator = _generator()
    data: dict[str, Any] = generator.load_units()
    for name in data["units"]:
        if not name.endswith(".service"):
            continue
        own, hardening = generator.service_settings(data, name)
        settings = {**hardening, **own}
        assert settings["User"] == "livepeer", name
        assert settings["NoNewPrivileges"] is True and settings["ProtectSystem"] == "strict", name
        assert settings["CapabilityBoundingSet"] == "", name
        if "gpu" in data["units"][name]["profiles"]:
            assert settings["DevicePolicy"] == "closed" and "render" in settings["SupplementaryGroups"], name
            assert {entry.split()[0] for entry in settings["DeviceAllow"]} >= {
                "char-nvidiactl",
                "char-nvidia-uvm",
                "char-nvidia-frontend",
                "char-nvidia-caps",
            }, name


def test_the_worker_unit_lifts_the_event_loop_and_leaves_inference_at_normal_priority() -> None:
    """The unit's Nice= and the node file's default inference_niceness cancel out: inference at 0 (as the other
    services), the event loop above it (vm-tests check the threads' nice values on a booted node)."""
    from appliance.config import WorkerSettings  # noqa: PLC0415

    generator = _generator()
    own, _ = generator.service_settings(generator.load_units(), "livepeer-worker@.service")
    assert int(own["Nice"]) < 0
    assert int(own["Nice"]) + WorkerSettings().inference_niceness == 0


@pytest.mark.parametrize(("unit", "limit"), sorted(EXPOSURE_LIMITS.items()))
def test_exposure_is_within_target(unit: str, limit: float) -> None:
    exposure = _exposure(SYSTEMD / unit)
    assert exposure <= limit, f"{unit}: exposure {exposure} > {limit}"


def test_the_exposure_check_fails_an_unhardened_unit(tmp_path: Path) -> None:
    worker = (SYSTEMD / "livepeer-worker@.service").read_text()
    bare = tmp_path / "livepeer-worker@.service"
    bare.write_text(worker.split("# Sandboxing")[0] + "\n[Install]\nWantedBy=multi-user.target\n")
    assert _exposure(bare) > EXPOSURE_LIMITS["livepeer-worker@.service"]


def _systemd_version() -> int:
    first = subprocess.run([_systemd_analyze(), "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"systemd (\d+)", first).group(1))  # type: ignore[union-attr]


def test_units_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` with nothing on stderr, but what this host cannot know.

    Where this host's systemd predates 254 it does not know RestartSteps/RestartMaxDelaySec (the bounded backoff;
    older systemd ignores them); the binaries are not installed here. The vm-tests verify on the node itself,
    with nothing filtered.
    """
    for path in SYSTEMD.iterdir():
        if path.suffix in (".service", ".target"):
            shutil.copy(path, tmp_path / path.name)
    units = [str(tmp_path / name) for name in ("livepeer-worker@0.service", "livepeer-orchestrator.service")]
    units += [str(tmp_path / n) for n in ("livepeer-models.service", "livepeer-engines.service")]
    units += [str(tmp_path / n) for n in ("livepeer-appliance.target", "livepeer-workers.target")]
    shutil.copy(tmp_path / "livepeer-worker@.service", tmp_path / "livepeer-worker@0.service")
    result = subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", *units], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    expected = [r"Command /opt/\S+ is not executable: No such file or directory"]
    if _systemd_version() < 254:
        expected.append(r"Unknown key '(RestartSteps|RestartMaxDelaySec)' in section \[Service\], ignoring\.")
    unexpected = [line for line in result.stderr.splitlines() if line and not any(re.search(p, line) for p in expected)]
    assert unexpected == [], result.stderr
