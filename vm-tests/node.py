"""Boot a fresh Debian trixie node with systemd as PID 1 in `systemd-nspawn`, air-gapped, reachable over SSH.

A `Node` is a throwaway machine for integration tests of the appliance:

- its root file system comes from a cached tarball (`ensure_root_tarball`: built once with `mmdebstrap`, keyed by a
  sha256 of the package list and the build recipe, stored under ``var/vm-cache/``), unpacked once into a shared tree
  and given to each node as a fresh copy-on-write overlay (`ensure_root_tree`);
- it lives in a private network namespace joined to the host by one veth pair (host 10.231.N.1/30, node 10.231.N.2/30)
  and has no default route, so the only thing it can reach is the host's veth address (see `Node.serve_http`);
- it boots with ``systemd-nspawn -b`` (`Node.boot`), or runs only ``sshd`` without systemd (`Node.start_unbooted_sshd`,
  for baking an image with Ansible), and is driven over SSH as root (`Node.ssh`, `Node.ansible_inventory`);
- it is always torn down (`Node.close`, also run by ``with``, `atexit`, SIGTERM and SIGINT): the container is stopped
  (SIGKILL after a grace period), the veth and the namespace deleted, the unpacked root removed. A run that was killed
  with SIGKILL leaves a state file under ``/run/lpa-vm-tests``; the next `Node` reaps what it names.

Timings (root build or cache hit, unpack, boot to SSH, poweroff) are printed to stderr and collected in `TIMINGS`.
Needs root and Debian's ``systemd-container``, ``mmdebstrap``, ``iproute2``, ``openssh-client``, ``zstd``,
``util-linux`` (``setpriv``).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

__all__ = [
    "DEFAULT_PACKAGES",
    "SUITE",
    "TIMINGS",
    "BootError",
    "Node",
    "NodeCommandError",
    "Timing",
    "ensure_root_tarball",
    "ensure_root_tree",
    "host_network_snapshot",
]

REPO = Path(__file__).resolve().parent.parent
SUITE = "trixie"
VARIANT = "minbase"
DEFAULT_PACKAGES: tuple[str, ...] = (
    "ca-certificates",
    "curl",
    "dbus",
    "iproute2",
    "openssh-server",
    "procps",
    "python3",
    "python3-venv",
    "sudo",
    "systemd",
    "systemd-sysv",
)
# Bump when anything about the build changes that the recipe text below does not show (mmdebstrap options, ...).
RECIPE_VERSION = 1
# Run by mmdebstrap as a customize hook, on the host, with the new root as $1. Part of the cache key.
RECIPE = r"""
set -eu
root="$1"

# SSH: keys only, root allowed with a key. The harness writes root's authorized_keys when it unpacks a node.
mkdir -p "$root/etc/ssh/sshd_config.d"
cat > "$root/etc/ssh/sshd_config.d/10-lpa-vm.conf" <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
EOF
chroot "$root" ssh-keygen -A
chroot "$root" passwd --lock root >/dev/null

# Air-gapped: no resolver (mmdebstrap copied the build host's), and no apt timers that could only fail or hold the
# dpkg lock while a test provisions the node.
: > "$root/etc/resolv.conf"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily.timer"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily-upgrade.timer"

# The container has no block devices or hardware clock to look after.
ln -sf /dev/null "$root/etc/systemd/system/fstrim.timer"

# Per-node identity comes at unpack time (hostname) and first boot (machine-id from nspawn's container UUID).
rm -f "$root/etc/hostname"
: > "$root/etc/machine-id"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
"""

NET_PREFIX = "10.231"
STATE_DIR = Path("/run/lpa-vm-tests")
CACHE_DIR = Path(os.environ.get("LPA_VM_CACHE", REPO / "var" / "vm-cache"))
LOG_DIR = Path(os.environ.get("LPA_VM_LOGS", REPO / "var" / "vm-logs"))
WORK_DIR = Path(os.environ.get("LPA_VM_WORKDIR", "/var/tmp/lpa-vm"))
MIRROR = os.environ.get("LPA_VM_MIRROR", "http://deb.debian.org/debian")
# Options for every ssh to a node: throwaway host keys, never a prompt, fail fast.
_SSH_CONFIG = (
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "BatchMode=yes",
    "IdentitiesOnly=yes",  # only the node's key, even with an ssh-agent full of others (too many auth failures)
    "LogLevel=ERROR",
)
SSH_OPTIONS: tuple[str, ...] = tuple(arg for option in _SSH_CONFIG for arg in ("-o", option))
STOP_GRACE_S = 20.0


@dataclass(frozen=True, slots=True)
class Timing:
    """One measured step, e.g. ``Timing("boot to ssh-ready", 1.2, "lpa-vm-3")``."""

    what: str
    seconds: float
    node: str = ""


TIMINGS: list[Timing] = []


def _record(what: str, seconds: float, node: str = "") -> None:
    TIMINGS.append(Timing(what, seconds, node))
    prefix = f"[lpa-vm {node}]" if node else "[lpa-vm]"
    print(f"{prefix} {what}: {seconds:.2f}s", file=sys.stderr, flush=True)


class BootError(RuntimeError):
    """The node did not come up (nspawn exited, SSH never answered, or systemd reported unexpected failed units)."""


class NodeCommandError(subprocess.CalledProcessError):
    """A command run on the node over SSH exited non-zero; the message carries its output."""

    def __str__(self) -> str:
        out = (self.stdout or "").strip()[-2000:]
        err = (self.stderr or "").strip()[-2000:]
        return f"{super().__str__()}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"


def _run(args: Sequence[str], *, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run a host command, capturing text output; raise with its stderr when `check` and it fails."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NodeCommandError(proc.returncode, list(args), proc.stdout, proc.stderr)
    return proc


# --------------------------------------------------------------------------------------------------------------------
# Root file system: built once per (package list, recipe), cached as a tarball.


def root_cache_key(packages: Sequence[str] = DEFAULT_PACKAGES, suite: str = SUITE) -> str:
    """The sha256 that names a cached root: of the suite, variant, sorted package list and the build recipe."""
    spec = {
        "suite": suite,
        "variant": VARIANT,
        "packages": sorted(set(packages)),
        "recipe": RECIPE,
        "recipe_version": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def ensure_root_tarball(
    packages: Sequence[str] = DEFAULT_PACKAGES, *, suite: str = SUITE, cache_dir: Path = CACHE_DIR
) -> Path:
    """Return the cached root tarball for `packages`, building it with mmdebstrap first when it is missing.

    Concurrent callers wait on a lock file instead of building twice. A failed build leaves no tarball behind (it is
    written to a temporary name and renamed into place) and raises `NodeCommandError` with mmdebstrap's output.
    """
    key = root_cache_key(packages, suite)
    tarball = cache_dir / f"debian-{suite}-{key[:16]}.tar.zst"
    cache_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with _flock(cache_dir / f".{tarball.name}.lock"):
        if tarball.exists():
            _record(f"root tarball cache hit ({tarball.name}, {tarball.stat().st_size / 2**20:.0f} MiB)", 0.0)
            return tarball
        with tempfile.TemporaryDirectory(prefix="lpa-vm-build-") as tmp:
            recipe = Path(tmp) / "recipe.sh"
            recipe.write_text(RECIPE)
            partial = cache_dir / f".{tarball.name}.partial.tar.zst"
            cmd = [
                "mmdebstrap",
                f"--variant={VARIANT}",
                f"--include={','.join(sorted(set(packages)))}",
                f'--customize-hook=sh {shlex.quote(str(recipe))} "$1"',
                suite,
                str(partial),
                MIRROR,
            ]
            try:
                _run(cmd, timeout=1800)
                partial.replace(tarball)
            finally:
                partial.unlink(missing_ok=True)
    _record(
        f"root tarball build, uncached ({tarball.name}, {tarball.stat().st_size / 2**20:.0f} MiB)",
        time.monotonic() - start,
    )
    return tarball


def ensure_root_tree(tarball: Path, workdir: Path = WORK_DIR) -> Path:
    """`tarball` unpacked once into a shared tree under `workdir`: the read-only lower layer of every node's overlay.

    Nothing may write to it (nodes write to their own upper layer). Keyed by the tarball's path, size and mtime; an
    interrupted unpack leaves only a ``.partial`` directory, removed by the next call.
    """
    info = tarball.stat()
    tag = hashlib.sha256(f"{tarball.resolve()}:{info.st_size}:{info.st_mtime_ns}".encode()).hexdigest()[:12]
    tree = workdir / "base" / f"{tarball.name.removesuffix('.tar.zst')}-{tag}"
    tree.parent.mkdir(parents=True, exist_ok=True)
    with _flock(tree.parent / f".{tree.name}.lock"):
        if tree.is_dir():
            return tree
        start = time.monotonic()
        partial = tree.with_name(f".{tree.name}.partial")
        _remove_tree(partial)
        _extract(tarball, partial)
        partial.rename(tree)
        _record(f"unpack shared root tree ({tree.name})", time.monotonic() - start)
    return tree


def _extract(tarball: Path, dest: Path) -> None:
    dest.mkdir(mode=0o755)
    tar = ["tar", "--zstd", "-xpf", str(tarball), "-C", str(dest), "--numeric-owner", "--xattrs", "--xattrs-include=*"]
    _run(tar, timeout=600)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------------------------
# Host network bookkeeping.


def host_network_snapshot() -> dict[str, list[str]]:
    """The host's links, routes and network namespaces, as `ip` prints them, for before/after comparisons."""

    def lines(*args: str) -> list[str]:
        return sorted(_run(["ip", *args]).stdout.splitlines())

    return {
        "links": lines("-o", "link"),
        "routes": lines("route"),
        "routes6": lines("-6", "route"),
        "netns": lines("netns", "list"),
    }


def _slot_in_use(slot: int) -> bool:
    names = _names(slot)
    if Path("/run/netns", names["netns"]).exists() or Path("/sys/class/net", names["host_if"]).exists():
        return True
    used = _run(["ip", "-o", "addr"]).stdout + _run(["ip", "route"]).stdout
    return re.search(rf"(^|\s){re.escape(NET_PREFIX)}\.{slot}\.", used, re.MULTILINE) is not None


def _names(slot: int) -> dict[str, str]:
    name = f"lpa-vm-{slot}"
    return {"name": name, "netns": name, "host_if": f"{name}-h", "node_if": f"{name}-n"}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids.extend(int(p) for p in (task / "children").read_text().split())
    return kids


def _is_nspawn(pid: int) -> bool:
    try:
        return b"systemd-nspawn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill_tree(pid: int) -> None:
    """SIGKILL an nspawn process and the container's init (killing a PID namespace's init kills the namespace)."""
    for child in _children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix) or point == prefix[:-1]:
            mounts.append(point)
    return mounts


def _remove_tree(path: Path) -> None:
    """Unmount whatever is mounted under `path` (a node's overlay root), then delete it; refuse while mounts remain."""
    if not path.exists():
        return
    for point in sorted(_mounts_under(path), reverse=True):
        if _run(["umount", point], check=False).returncode != 0:
            _run(["umount", "--lazy", point], check=False)
    if mounts := _mounts_under(path):
        print(f"[lpa-vm] not removing {path}: still mounted: {mounts}", file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)


def _reap(state: Mapping[str, Any]) -> None:
    """Undo whatever one (possibly dead) node's state file names: its nspawn, veth, netns and directory."""
    pid = state.get("nspawn_pid")
    if isinstance(pid, int) and _is_nspawn(pid):
        _kill_tree(pid)
        for _ in range(50):
            if not _pid_alive(pid):
                break
            time.sleep(0.1)
    names = _names(int(state["slot"]))
    if Path("/sys/class/net", names["host_if"]).exists():
        _run(["ip", "link", "del", names["host_if"]], check=False)
    if Path("/run/netns", names["netns"]).exists():
        _run(["ip", "netns", "del", names["netns"]], check=False)
    if workdir := state.get("workdir"):
        _remove_tree(Path(workdir))


def _reap_stale() -> None:
    """Reap nodes whose owning process is gone (a test run killed with SIGKILL). Call with the state lock held."""
    for path in STATE_DIR.glob("*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        owner = int(state.get("owner", 0))
        if owner > 0 and _pid_alive(owner):
            continue
        print(f"[lpa-vm] reaping stale node {path.stem} (owner pid {state.get('owner')} is gone)", file=sys.stderr)
        _reap(state)
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------------------------
# Teardown that always runs.

_LIVE: weakref.WeakSet[Node] = weakref.WeakSet()
_HANDLERS_INSTALLED = False


def _close_all() -> None:
    for node in list(_LIVE):
        try:
            node.close()
        except Exception as exc:  # teardown of the others must go on
            print(f"[lpa-vm] teardown of {node.name} failed: {exc!r}", file=sys.stderr)


def _on_signal(previous: Any, signum: int, frame: FrameType | None) -> None:
    _close_all()
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _HANDLERS_INSTALLED  # noqa: PLW0603 - process-wide, once
    if _HANDLERS_INSTALLED:
        return
    atexit.register(_close_all)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if previous != signal.SIG_IGN:  # e.g. SIGINT in a background job: it is meant to do nothing
                signal.signal(signum, functools.partial(_on_signal, previous))
    _HANDLERS_INSTALLED = True


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# --------------------------------------------------------------------------------------------------------------------
# The node.


class Node:
    """One throwaway Debian node: a private network namespace, a fresh root, an nspawn container, an SSH key.

    Nothing happens until `boot` or `start_unbooted_sshd` (or `prepare`). Use it as a context manager, or call
    `close`; teardown also runs at interpreter exit and on SIGTERM/SIGINT. A node can be booted, powered off and
    booted again on the same root (state on disk persists) as often as needed until it is closed.

    The root is a fresh overlay (copy-on-write) over a tree unpacked once per tarball (`ensure_root_tree`), so each
    node starts from the pristine tarball; ``overlay=False`` (or a host without overlayfs) unpacks the whole tarball
    into the node's own directory instead.
    """

    def __init__(
        self,
        tarball: Path | None = None,
        *,
        packages: Sequence[str] = DEFAULT_PACKAGES,
        expected_failed_units: Sequence[str] = (),
        workdir: Path = WORK_DIR,
        log_dir: Path = LOG_DIR,
        overlay: bool = True,
    ) -> None:
        self.tarball = tarball if tarball is not None else ensure_root_tarball(packages)
        self.expected_failed_units = frozenset(expected_failed_units)
        self._workdir_base = workdir
        self._overlay = overlay
        self._log_dir = log_dir
        self.slot = 0
        self.name = "lpa-vm-unallocated"
        self.netns = ""
        self.host_if = ""
        self.node_if = ""
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None
        self.console_log: Path | None = None
        self._booted = False
        self._runs = 0
        self._servers: list[http.server.ThreadingHTTPServer] = []
        self._closed = False
        self._owns_slot = False
        self._lock = threading.RLock()
        _install_handlers()
        _LIVE.add(self)

    # -- addresses and paths -----------------------------------------------------------------------------------------

    @property
    def host_ip(self) -> str:
        """The host's end of the veth: the only address the node can reach."""
        return f"{NET_PREFIX}.{self.slot}.1"

    @property
    def ip(self) -> str:
        """The node's address (in its private network namespace)."""
        return f"{NET_PREFIX}.{self.slot}.2"

    @property
    def root(self) -> Path:
        """The node's root directory on the host (edit it only while the node is stopped)."""
        return self._require_workdir() / "root"

    @property
    def key_path(self) -> Path:
        """The private ed25519 key that logs in as root on the node."""
        return self._require_workdir() / "ssh" / "id_ed25519"

    @property
    def running(self) -> bool:
        """Whether an nspawn process (booted or unbooted) is running for this node."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def booted(self) -> bool:
        """Whether the node is running with systemd as PID 1."""
        return self.running and self._booted

    def _require_workdir(self) -> Path:
        if self.workdir is None:
            raise RuntimeError(f"{self.name}: not prepared yet (call boot() or prepare())")
        return self.workdir

    # -- setup -------------------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Allocate the network slot, create the netns and veth, unpack the root and install the SSH key. Idempotent.

        On failure everything created so far is torn down again by `close`.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: already closed")
            if self.workdir is not None:
                return
            try:
                self._allocate()
                self._make_network()
                self._unpack()
            except BaseException:
                self.close()
                raise

    def _allocate(self) -> None:
        STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _flock(STATE_DIR / "lock"):
            _reap_stale()
            for slot in range(1, 255):
                if (STATE_DIR / f"{slot}.json").exists() or _slot_in_use(slot):
                    continue
                names = _names(slot)
                self.slot = slot
                self.name, self.netns = names["name"], names["netns"]
                self.host_if, self.node_if = names["host_if"], names["node_if"]
                self._owns_slot = True
                self._workdir_base.mkdir(parents=True, exist_ok=True)
                self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self._workdir_base))
                self._save_state()
                return
        raise RuntimeError(f"no free {NET_PREFIX}.N.0/30 slot for a node")

    def _state(self) -> dict[str, Any]:
        """What `_reap` needs to undo this node, also written to its state file for a later run to reap."""
        return {
            "slot": self.slot,
            "owner": os.getpid(),
            "workdir": str(self.workdir) if self.workdir else None,
            "nspawn_pid": self._proc.pid if self._proc else None,
        }

    def _save_state(self) -> None:
        path = STATE_DIR / f"{self.slot}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state()))
        tmp.replace(path)

    def _make_network(self) -> None:
        ip = functools.partial(_run, timeout=30)
        ip(["ip", "netns", "add", self.netns])
        ip(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.node_if, "netns", self.netns])
        ip(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if])
        ip(["ip", "link", "set", self.host_if, "up"])
        ip(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        ip(["ip", "-n", self.netns, "addr", "add", f"{self.ip}/30", "dev", self.node_if])
        ip(["ip", "-n", self.netns, "link", "set", self.node_if, "up"])

    def _unpack(self) -> None:
        start = time.monotonic()
        root = self.root
        root.mkdir(mode=0o755)
        if self._overlay:
            # Copy-on-write over one shared unpacked tree: milliseconds instead of seconds of tar per node.
            lower = ensure_root_tree(self.tarball, self._workdir_base)
            upper, work = self._require_workdir() / "upper", self._require_workdir() / "overlay-work"
            upper.mkdir(mode=0o755)
            work.mkdir(mode=0o700)
            options = f"lowerdir={lower},upperdir={upper},workdir={work}"
            mounted = _run(["mount", "-t", "overlay", "overlay", "-o", options, str(root)], check=False)
            if mounted.returncode != 0:
                print(
                    f"[lpa-vm {self.name}] overlay mount failed, unpacking instead: {mounted.stderr}", file=sys.stderr
                )
                self._overlay = False
        if not self._overlay:
            _extract(self.tarball, root)
        key_dir = self.key_path.parent
        key_dir.mkdir(mode=0o700)
        _run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"lpa-vm-tests@{self.name}", "-f", str(self.key_path)]
        )
        ssh_dir = root / "root" / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(self.key_path.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        (root / "etc" / "hostname").write_text(f"{self.name}\n")
        with (root / "etc" / "hosts").open("a") as hosts:
            hosts.write(f"127.0.1.1\t{self.name}\n")
        how = "overlay over the shared tree" if self._overlay else "tar"
        _record(f"prepare root ({how})", time.monotonic() - start, self.name)

    # -- running -----------------------------------------------------------------------------------------------------

    def _spawn(self, extra: Sequence[str], label: str) -> None:
        self.prepare()
        if self.running:
            raise RuntimeError(f"{self.name}: already running")
        self._runs += 1
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self.console_log = self._log_dir / f"{self.name}-{self._runs}-{label}.log"
        self._console = self.console_log.open("wb")
        env = dict(os.environ)
        if Path("/sys/fs/cgroup/unified").is_dir() or Path("/sys/fs/cgroup/cgroup.controllers").exists():
            # A hybrid (v1 + v2) host would otherwise hand the container cgroup v1, which trixie's systemd no longer
            # wants; give it the unified hierarchy, like a real trixie machine has.
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        cmd = [
            "systemd-nspawn",
            "--register=no",
            "--keep-unit",
            "--quiet",
            "-D",
            str(self.root),
            f"--network-namespace-path=/run/netns/{self.netns}",
            f"--machine={self.name}",
            *extra,
        ]
        # setpriv: nspawn gets SIGTERM (an orderly container shutdown) if the harness dies without tearing down.
        self._proc = subprocess.Popen(
            ["setpriv", "--pdeathsig", "TERM", "--", *cmd],
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        with _flock(STATE_DIR / "lock"):
            self._save_state()

    def boot(self, timeout: float = 120.0) -> None:
        """Boot the node (systemd as PID 1) and wait until SSH answers and ``systemctl is-system-running --wait`` ends.

        Raises `BootError` when nspawn exits early, SSH does not answer within `timeout`, or the system ends up
        degraded with failed units not listed in `expected_failed_units` (``systemctl --failed`` and their status are
        in the message). A node that booted but failed that check is left running, for inspection.
        """
        with self._lock:
            self.prepare()
            start = time.monotonic()
            self._spawn(["-b"], "boot")
            self._booted = True
            self._wait_ssh(start + timeout)
            _record("boot to ssh-ready", time.monotonic() - start, self.name)
            state = self.ssh("systemctl is-system-running --wait", check=False, timeout=timeout).stdout.strip()
            _record(f"boot to is-system-running={state}", time.monotonic() - start, self.name)
            if state == "running":
                return
            failed = self.ssh("systemctl --failed --plain --no-legend --no-pager", check=False).stdout
            units = {line.split()[0] for line in failed.splitlines() if line.strip()}
            print(f"[lpa-vm {self.name}] systemctl --failed:\n{failed}", file=sys.stderr)
            if state == "degraded" and units <= self.expected_failed_units:
                return
            unexpected = sorted(units - self.expected_failed_units)
            status = self.ssh(["systemctl", "status", "--no-pager", "--lines=15", *unexpected], check=False).stdout
            raise BootError(
                f"{self.name}: system is {state!r}; unexpected failed units: {unexpected}\n{failed}\n{status}"
            )

    def start_unbooted_sshd(self, timeout: float = 60.0) -> None:
        """Run only sshd in the root (no systemd), e.g. to provision an image offline with Ansible.

        ``systemctl enable`` works in this mode; starting services does not (``is-system-running`` says "offline").
        Stop it with `stop_unbooted` before `boot`.
        """
        with self._lock:
            self.prepare()
            start = time.monotonic()
            script = "mkdir -p -m 0755 /run/sshd && exec /usr/sbin/sshd -D -e"
            self._spawn(["--as-pid2", "/bin/sh", "-c", script], "unbooted")
            self._booted = False
            self._wait_ssh(start + timeout)
            _record("unbooted sshd to ssh-ready", time.monotonic() - start, self.name)

    def stop_unbooted(self, timeout: float = STOP_GRACE_S) -> None:
        """Stop the unbooted sshd container (nspawn kills everything in it); the root stays for a later `boot`."""
        with self._lock:
            if self._booted:
                raise RuntimeError(f"{self.name}: booted; use poweroff()")
            self._stop(timeout)

    def poweroff(self, timeout: float = 60.0) -> None:
        """Shut the booted node down cleanly (``systemctl poweroff``) and wait for nspawn to exit.

        Falls back to SIGTERM for nspawn (an orderly halt), then SIGKILL, if it does not exit within `timeout`.
        The root stays for a later `boot`.
        """
        with self._lock:
            if not self.running:
                return
            start = time.monotonic()
            if self._booted:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.ssh("systemctl poweroff --no-block", check=False, timeout=15)
                assert self._proc is not None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout)
            self._stop(STOP_GRACE_S)
            _record("poweroff", time.monotonic() - start, self.name)

    def _stop(self, grace: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                print(f"[lpa-vm {self.name}] nspawn ignored SIGTERM for {grace:.0f}s: SIGKILL", file=sys.stderr)
                _kill_tree(proc.pid)
                proc.wait(30)
        self._proc = None
        self._booted = False
        if self._console is not None:
            self._console.close()
            self._console = None
        with _flock(STATE_DIR / "lock"):
            if self.workdir is not None and not self._closed:
                self._save_state()

    def _wait_ssh(self, deadline: float) -> None:
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BootError(f"{self.name}: nspawn exited with {self._proc.returncode}\n{self._console_tail()}")
            try:
                if self.ssh("true", check=False, timeout=10, connect_timeout=2).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise BootError(f"{self.name}: SSH on {self.ip} did not answer in time\n{self._console_tail()}")
            time.sleep(0.2)

    def _console_tail(self, lines: int = 60) -> str:
        if self.console_log is None or not self.console_log.exists():
            return "(no console log)"
        text = self.console_log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.console_log} (last {lines} lines) ---\n" + "\n".join(text)

    # -- talking to it -----------------------------------------------------------------------------------------------

    def ssh_args(self, connect_timeout: int = 5) -> list[str]:
        """The ``ssh`` command line (without the remote command) that logs in as root on the node."""
        return [
            "ssh",
            "-i",
            str(self.key_path),
            *SSH_OPTIONS,
            "-o",
            f"ConnectTimeout={connect_timeout}",
            f"root@{self.ip}",
        ]

    def ssh(
        self,
        cmd: str | Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120.0,
        input: str | None = None,
        connect_timeout: int = 5,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` as root on the node (a string is a shell command line; a sequence is quoted for you).

        Raises `NodeCommandError` (with stdout and stderr in its message) when `check` and it exits non-zero, and
        `subprocess.TimeoutExpired` after `timeout` seconds. Exit status 255 means SSH itself failed.
        """
        remote = cmd if isinstance(cmd, str) else shlex.join(cmd)
        args = [*self.ssh_args(connect_timeout), "--", remote]
        proc = subprocess.run(
            args,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NodeCommandError(proc.returncode, remote, proc.stdout, proc.stderr)
        return proc

    def put(self, local: Path, remote: str, *, mode: int = 0o644) -> None:
        """Copy one host file to `remote` on the node (over SSH, no sftp needed)."""
        quoted = shlex.quote(remote)
        args = [
            *self.ssh_args(),
            "--",
            f"cat > {quoted}.lpa-tmp && chmod {mode:o} {quoted}.lpa-tmp && mv {quoted}.lpa-tmp {quoted}",
        ]
        with local.open("rb") as source:
            proc = subprocess.run(args, stdin=source, capture_output=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise NodeCommandError(
                proc.returncode, args, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
            )

    def ansible_inventory(
        self, path: Path, group: str = "orchestrators", extra_vars: Mapping[str, Any] | None = None
    ) -> Path:
        """Write an Ansible inventory (YAML, in its JSON form) with this node as the only host of `group`.

        `path` is the file to write (``.yml``, ``.yaml`` or ``.json``) or a directory (``inventory.yml`` in it).
        `extra_vars` become host variables, typed as given. Returns the file written.
        """
        if path.is_dir():
            path /= "inventory.yml"
        if path.suffix not in {".yml", ".yaml", ".json"}:
            raise ValueError(f"{path}: Ansible's yaml inventory plugin reads only .yml, .yaml or .json files")
        host_vars: dict[str, Any] = {
            "ansible_host": self.ip,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key_path),
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_common_args": shlex.join([*SSH_OPTIONS, "-o", "ConnectTimeout=10"]),
            **(extra_vars or {}),
        }
        inventory = {"all": {"children": {group: {"hosts": {self.name: host_vars}}}}}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(inventory, indent=2) + "\n")
        return path

    def serve_http(self, directory: Path) -> str:
        """Serve `directory` read-only over HTTP on the host's veth address (a random port) until `close`.

        Returns the base URL, e.g. ``http://10.231.3.1:41234/``; the node can fetch from it, nothing else can route
        to it from outside the host.
        """
        self.prepare()
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer((self.host_ip, 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name=f"{self.name}-http", daemon=True)
        thread.start()
        self._servers.append(server)
        return f"http://{self.host_ip}:{server.server_address[1]}/"

    # -- teardown ----------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Tear everything down: HTTP servers, the container (SIGKILL after a grace period), veth, netns, root.

        Safe to call more than once, and on a node that was never started; each step that fails is reported on
        stderr and the rest still run.
        """
        with self._lock:
            self._closed = True
            start = time.monotonic()
            steps: list[tuple[str, Callable[[], None]]] = [
                *((f"stop {server.server_address}", server.shutdown) for server in self._servers),
                *((f"close {server.server_address}", server.server_close) for server in self._servers),
                ("stop nspawn", functools.partial(self._stop, STOP_GRACE_S)),
            ]
            if self._owns_slot:
                steps.append(("delete veth, netns and root", lambda: _reap(self._state())))
            for what, step in steps:
                try:
                    step()
                except Exception as exc:  # the other steps must still run
                    print(f"[lpa-vm {self.name}] teardown: {what} failed: {exc!r}", file=sys.stderr)
            self._servers.clear()
            if self._owns_slot:
                (STATE_DIR / f"{self.slot}.json").unlink(missing_ok=True)
                self._owns_slot = False
                _record("teardown", time.monotonic() - start, self.name)
            self.workdir = None
            _LIVE.discard(self)

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "booted" if self.booted else "unbooted" if self.running else "stopped"
        return f"<Node {self.name} {self.ip} {state}>"
