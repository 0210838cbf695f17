"""Fixtures for the node-level tests: one booted Debian trixie node (systemd-nspawn) for the session, fresh ones.

The tests skip when the host cannot boot nodes (not root, or no ``systemd-nspawn``), unless ``LPA_VM_TESTS=required``
is set (CI), in which case they fail with the same message.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node import TIMINGS, Node, ensure_root_tarball

MakeNode = Callable[[], Node]


def _unsupported() -> str | None:
    """Why this host cannot run node tests, or None when it can."""
    if os.geteuid() != 0:
        return "vm-tests need root (network namespaces, systemd-nspawn); run them as root or with sudo"
    if shutil.which("systemd-nspawn") is None:
        return "vm-tests need systemd-nspawn: apt-get install systemd-container"
    return None


@pytest.fixture(scope="session", autouse=True)
def _vm_host() -> None:
    if (reason := _unsupported()) is None:
        return
    if os.environ.get("LPA_VM_TESTS") == "required":
        pytest.fail(f"LPA_VM_TESTS=required but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def root_tarball(_vm_host: None) -> Path:
    """The cached Debian trixie root (built with mmdebstrap on first use)."""
    return ensure_root_tarball()


@pytest.fixture(scope="session")
def node(root_tarball: Path) -> Iterator[Node]:
    """One booted node for the whole session: tests that only read or add harmless state share it."""
    with Node(root_tarball) as booted:
        booted.boot()
        yield booted


@pytest.fixture
def make_node(root_tarball: Path) -> Iterator[MakeNode]:
    """A factory for fresh, not yet started nodes (each with its own root and network); all closed after the test."""
    made: list[Node] = []

    def make() -> Node:
        fresh = Node(root_tarball)
        made.append(fresh)
        return fresh

    yield make
    for fresh in made:
        fresh.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every measured step, so a note can quote them."""
    if not TIMINGS:
        return
    terminalreporter.section("node timings")
    for timing in TIMINGS:
        where = f"{timing.node}: " if timing.node else ""
        terminalreporter.write_line(f"{where}{timing.what}: {timing.seconds:.2f}s")
