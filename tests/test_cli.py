"""The `lpa` command as an operator runs it: help everywhere, clear errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_node

LPA = [sys.executable, "-m", "appliance.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LPA, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["fetch-models"],
        ["models"],
        ["render"],
        ["check-gateway"],
        ["engines"],
        ["engines", "plan"],
        ["doctor"],
    ],
)
def test_help_everywhere(command: list[str]) -> None:
    result = _run(*command, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: lpa")


def test_bad_node_file_is_exit_2_with_path(tmp_path: Path) -> None:
    node = tmp_path / "node.toml"
    node.write_text('[[models]]\nmodel = "u2netp"\ncapability = "segmentation"\ncapacity = -1\n')
    result = _run("serve", "--node", str(node))
    assert result.returncode == 2
    assert f"lpa: error: {node}: Expected `int` >= 1 - at `$.models[0].capacity`" in result.stderr


def test_bad_listen_flag_is_exit_2(tmp_path: Path, model_dir: Path) -> None:
    node = write_node(
        tmp_path / "n.toml", model_dir=model_dir, models=[{"model": "u2netp", "capability": "segmentation"}]
    )
    result = _run("serve", "--node", str(node), "--listen", "nowhere")
    assert result.returncode == 2 and "must look like HOST:PORT" in result.stderr


def test_fetch_models_is_a_no_op_when_present(tmp_path: Path, model_dir: Path) -> None:
    node = write_node(
        tmp_path / "n.toml", model_dir=model_dir, models=[{"model": "u2netp", "capability": "segmentation"}]
    )
    result = _run("fetch-models", "--node", str(node), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["present", "u2netp"]


def test_fetch_models_refuses_unknown_model(tmp_path: Path, model_dir: Path) -> None:
    node = write_node(
        tmp_path / "n.toml", model_dir=model_dir, models=[{"model": "u2netp", "capability": "segmentation"}]
    )
    result = _run("fetch-models", "--node", str(node), "no-such-model")
    assert result.returncode == 2 and "no model named 'no-such-model'" in result.stderr


def test_doctor_reports_providers_gpus_and_models(tmp_path: Path, model_dir: Path) -> None:
    node = write_node(
        tmp_path / "n.toml", model_dir=model_dir, models=[{"model": "u2netp", "capability": "segmentation"}]
    )
    result = _run("doctor", "--node", str(node))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CPUExecutionProvider         works" in result.stdout
    assert "gpus" in result.stdout and "u2netp" in result.stdout and "ready to serve" in result.stdout


def test_doctor_fails_when_a_model_is_missing(tmp_path: Path) -> None:
    node = write_node(
        tmp_path / "n.toml",
        model_dir=tmp_path / "empty",
        models=[{"model": "u2netp", "capability": "segmentation"}],
    )
    result = _run("doctor", "--node", str(node))
    assert result.returncode == 1 and "MISSING" in result.stdout and "run `lpa fetch-models`" in result.stdout


def test_models_lists_the_catalog(tmp_path: Path, model_dir: Path) -> None:
    node = write_node(
        tmp_path / "n.toml", model_dir=model_dir, models=[{"model": "u2netp", "capability": "segmentation"}]
    )
    result = _run("models", "--node", str(node))
    assert result.returncode == 0
    rows = {line.split()[0]: line.split()[1:5] for line in result.stdout.splitlines()[1:]}
    assert rows["u2netp"] == ["segmentation", "yes", "yes", "yes"]
    assert rows["depth-anything-v2-small"][:2] == ["depth", "no"]


def test_missing_token_file_is_exit_2(tmp_path: Path, model_dir: Path) -> None:
    node = write_node(
        tmp_path / "n.toml",
        model_dir=model_dir,
        token_file=str(tmp_path / "absent"),
        models=[{"model": "u2netp", "capability": "segmentation"}],
    )
    result = _run("serve", "--node", str(node))
    assert result.returncode == 2
    assert f"worker.token_file {tmp_path / 'absent'}: cannot read" in result.stderr
