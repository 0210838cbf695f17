"""The Ansible roles: lint-clean under the production profile, syntactically valid, every variable documented.

Running them for real is vm-tests/test_provision.py's job (a booted node); these checks run everywhere.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
ROLES = sorted(path for path in (ANSIBLE / "roles").iterdir() if path.is_dir())


def _lint(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--nocolor"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_ansible_lint_production_profile_passes() -> None:
    result = _lint(ANSIBLE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_fails_a_role_that_breaks_its_rules(tmp_path: Path) -> None:
    copy = tmp_path / "ansible"
    shutil.copytree(ANSIBLE, copy)
    tasks = copy / "roles" / "livepeer_gpu" / "tasks" / "main.yml"
    tasks.write_text(tasks.read_text() + "\n- shell: nvidia-smi -L\n")  # no name, no FQCN, no changed_when
    result = _lint(copy)
    assert result.returncode != 0
    assert "fqcn" in result.stdout + result.stderr


def test_the_playbook_parses() -> None:
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", "inventory.example.yml", "site.yml"],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_role_documents_every_variable_it_defaults() -> None:
    for role in ROLES:
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
        options = specs["argument_specs"]["main"].get("options", {})
        assert all(name.startswith(f"{role.name}_") or name.startswith("livepeer_") for name in defaults), role.name
        assert set(defaults) <= set(options), f"{role.name}: undocumented {sorted(set(defaults) - set(options))}"
        assert all(option.get("description") for option in options.values()), role.name
        assert "#" in (role / "defaults" / "main.yml").read_text(), f"{role.name}: defaults carry no comments"
