"""Smoke tests of the node harness: systemd as PID 1, SSH, air gap, hardening, reboot, image bake, teardown.

Appliance scenarios build on these guarantees; if one of these fails, fix the harness (node.py) first.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from node import BootError, Node, NodeCommandError, host_network_snapshot

MakeNode = Callable[[], Node]

PROBE_UNIT = textwrap.dedent(
    """\
    [Unit]
    Description=vm-tests probe: proves a unit enabled offline starts on the next boot

    [Service]
    Type=oneshot
    RemainAfterExit=yes
    ExecStart=/bin/sh -c 'echo ran > /run/lpa-probe'

    [Install]
    WantedBy=multi-user.target
    """
)


def _without_nodes(snapshot: dict[str, list[str]]) -> dict[str, list[str]]:
    """The host's network minus every node's veth, route and namespace (other runs may have nodes up meanwhile)."""
    return {kind: [line for line in lines if "lpa-vm-" not in line] for kind, lines in snapshot.items()}


def _mentions(snapshot: dict[str, list[str]], node: Node) -> list[str]:
    """The lines of `snapshot` that name one of `node`'s interfaces or its network namespace."""
    ours = {node.netns, node.host_if, node.node_if}
    return [
        line
        for lines in snapshot.values()
        for line in lines
        if ours & {word.split("@")[0].strip(":,") for word in line.split()}
    ]


def test_systemd_is_pid1_and_the_system_is_running(node: Node) -> None:
    assert node.ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    assert node.ssh("readlink /proc/1/exe").stdout.strip() == "/usr/lib/systemd/systemd"
    assert node.ssh("systemd-detect-virt --container").stdout.strip() == "systemd-nspawn"
    assert node.ssh("systemctl is-system-running").stdout.strip() == "running"
    assert node.ssh(". /etc/os-release && echo $VERSION_CODENAME").stdout.strip() == "trixie"
    assert node.ssh("hostname").stdout.strip() == node.name


def test_ssh_runs_commands_as_root_with_keys_only(node: Node) -> None:
    assert node.ssh(["id", "-un"]).stdout.strip() == "root"
    assert node.ssh(["printf", "%s", "two words; $HOME"]).stdout == "two words; $HOME"
    assert node.ssh("cat", input="through stdin").stdout == "through stdin"
    assert node.ssh("exit 3", check=False).returncode == 3
    with pytest.raises(NodeCommandError, match="no-such-command"):
        node.ssh("no-such-command")
    config = node.ssh("sshd -T").stdout.splitlines()
    assert "passwordauthentication no" in config
    assert "kbdinteractiveauthentication no" in config
    assert "permitrootlogin without-password" in config


def test_put_copies_a_file(node: Node, tmp_path: Path) -> None:
    local = tmp_path / "payload.bin"
    local.write_bytes(os.urandom(4096))
    node.put(local, "/root/payload.bin", mode=0o600)
    digest = node.ssh("sha256sum /root/payload.bin && stat -c %a /root/payload.bin").stdout.split()
    assert (
        digest[0] == subprocess.run(["sha256sum", local], capture_output=True, text=True, check=True).stdout.split()[0]
    )
    assert digest[-1] == "600"


def test_node_is_air_gapped_but_reaches_the_host(node: Node, tmp_path: Path) -> None:
    routes = node.ssh("ip route; ip -6 route").stdout
    assert "default" not in routes, routes
    assert node.ssh("ip -o -4 addr show scope global").stdout.split()[3] == f"{node.ip}/30"

    # By name: no resolver. By address: no route (the host's own gateway, a public resolver, the Debian mirror).
    by_name = node.ssh("curl -sS --max-time 5 http://deb.debian.org/debian/", check=False)
    assert by_name.returncode != 0, by_name.stdout
    gateway = next(line.split()[2] for line in host_network_snapshot()["routes"] if line.startswith("default "))
    addresses = [gateway, "1.1.1.1"]
    with contextlib.suppress(OSError):  # when the host cannot resolve it either, the others still prove the point
        addresses.append(str(socket.getaddrinfo("deb.debian.org", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]))
    for address in addresses:
        result = node.ssh(f"curl -sS --connect-timeout 3 --max-time 5 http://{address}/", check=False)
        assert result.returncode == 7, (address, result.returncode, result.stderr)  # 7: could not connect
        connect = f"import socket; print(socket.socket().connect_ex(({address!r}, 80)))"
        assert node.ssh(["python3", "-c", connect]).stdout.strip() == str(errno.ENETUNREACH), address

    # The one thing it can reach: the host's end of the veth, e.g. to download artifacts.
    (tmp_path / "artifact.txt").write_text("from the host\n")
    url = node.serve_http(tmp_path)
    assert url.startswith(f"http://{node.host_ip}:")
    assert node.ssh(f"curl -fsS --max-time 10 {url}artifact.txt").stdout == "from the host\n"
    assert node.ssh(f"curl -sS -o /dev/null -w '%{{http_code}}' {url}missing", check=False).stdout == "404"


def test_service_hardening_really_applies(node: Node) -> None:
    run = "systemd-run --wait --pipe --quiet --collect"
    sandboxed = node.ssh(
        f"{run} -p DynamicUser=yes -p ProtectSystem=strict -p ProtectHome=yes -p PrivateTmp=yes "
        "sh -c 'id -u; touch /usr/lpa-probe 2>&1; ls /root 2>&1; echo done'",
        check=False,
    ).stdout.splitlines()
    assert int(sandboxed[0]) >= 61184, sandboxed  # systemd's dynamic user range
    assert "Read-only file system" in sandboxed[1], sandboxed
    assert "Permission denied" in sandboxed[2], sandboxed
    assert node.ssh("test ! -e /usr/lpa-probe", check=False).returncode == 0

    denied = node.ssh(f"{run} -p SystemCallFilter=~uname -p SystemCallErrorNumber=EPERM uname -r", check=False)
    assert denied.returncode != 0
    assert "Operation not permitted" in denied.stderr, denied.stderr
    assert node.ssh(f"{run} uname -r").returncode == 0


def test_ansible_inventory_reaches_the_node(node: Node, tmp_path: Path) -> None:
    ansible = Path(sys.executable).parent / "ansible"
    assert ansible.exists(), f"{ansible} is missing: install the project's provision group (uv sync)"
    inventory = node.ansible_inventory(tmp_path, extra_vars={"lpa_probe": [1, 2]})
    result = subprocess.run(
        [ansible, "-i", inventory, "orchestrators", "-m", "ansible.builtin.setup", "-a", "filter=ansible_service_mgr"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"ansible_service_mgr": "systemd"' in result.stdout
    variables = subprocess.run(
        [ansible, "-i", inventory, "orchestrators", "-m", "ansible.builtin.debug", "-a", "var=lpa_probe"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    assert '"lpa_probe": [\n        1,\n        2\n    ]' in variables


def test_reboot_keeps_what_was_written_to_disk(make_node: MakeNode) -> None:
    node = make_node()
    node.boot()
    token = secrets.token_hex(8)
    node.ssh(f"mkdir -p /var/lib/lpa-probe && echo {token} > /var/lib/lpa-probe/token && sync")
    node.ssh("echo gone-after-reboot > /run/lpa-volatile")
    first_boot = node.ssh("cat /proc/sys/kernel/random/boot_id").stdout
    machine_id = node.ssh("cat /etc/machine-id").stdout

    node.poweroff()
    assert not node.running
    assert (node.root / "var/lib/lpa-probe/token").read_text() == f"{token}\n"

    node.boot()
    assert node.ssh("cat /var/lib/lpa-probe/token").stdout == f"{token}\n"
    assert node.ssh("test -e /run/lpa-volatile", check=False).returncode == 1
    assert node.ssh("cat /proc/sys/kernel/random/boot_id").stdout != first_boot
    assert node.ssh("cat /etc/machine-id").stdout == machine_id
    assert len(json.loads(node.ssh("journalctl --list-boots --output=json").stdout)) == 2  # a persistent journal


def test_unbooted_sshd_bakes_an_image_that_boots(make_node: MakeNode, tmp_path: Path) -> None:
    node = make_node()
    node.start_unbooted_sshd()
    assert not node.booted
    assert node.ssh("cat /proc/1/comm").stdout.strip() != "systemd"
    offline = node.ssh("systemctl is-system-running", check=False)
    assert offline.stdout.strip() == "offline", offline

    token = secrets.token_hex(8)
    node.ssh(f"echo {token} > /root/baked")
    unit = tmp_path / "lpa-probe.service"
    unit.write_text(PROBE_UNIT)
    node.put(unit, "/etc/systemd/system/lpa-probe.service")
    node.ssh("systemctl enable lpa-probe.service")  # works offline: it only writes symlinks
    assert node.ssh("systemctl start lpa-probe.service", check=False).returncode != 0  # no systemd to start it
    node.stop_unbooted()
    assert not node.running

    node.boot()
    assert node.ssh("cat /root/baked").stdout == f"{token}\n"
    assert node.ssh("systemctl is-active lpa-probe.service").stdout.strip() == "active"
    assert node.ssh("cat /run/lpa-probe").stdout == "ran\n"


def test_a_failed_unit_fails_the_boot_unless_expected(make_node: MakeNode) -> None:
    node = make_node()
    node.prepare()
    units = node.root / "etc/systemd/system"
    (units / "lpa-broken.service").write_text("[Service]\nType=oneshot\nExecStart=/bin/false\n")
    (units / "multi-user.target.wants/lpa-broken.service").symlink_to("/etc/systemd/system/lpa-broken.service")
    with pytest.raises(BootError, match=r"(?s)'degraded'.*lpa-broken\.service"):
        node.boot()
    node.poweroff()

    node.expected_failed_units = frozenset({"lpa-broken.service"})
    node.boot()
    assert node.ssh("systemctl is-failed lpa-broken.service", check=False).stdout.strip() == "failed"


def test_teardown_leaves_the_host_as_it_was(root_tarball: Path) -> None:
    before = host_network_snapshot()
    with Node(root_tarball) as node:
        node.boot()
        during = host_network_snapshot()
        assert len(_mentions(during, node)) >= 3, during  # the veth, its route, the namespace
        workdir, pid = node.workdir, node._proc.pid if node._proc else 0
        node.serve_http(workdir or Path())
    after = host_network_snapshot()
    assert _without_nodes(after) == _without_nodes(before)
    assert _mentions(after, node) == []
    assert workdir is not None
    assert not workdir.exists()
    assert not Path(f"/proc/{pid}").exists()
    assert not Path("/run/netns", node.netns).exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_harness_tears_the_node_down(root_tarball: Path, signum: signal.Signals) -> None:
    before = host_network_snapshot()
    script = textwrap.dedent(
        f"""
        import json, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from node import Node
        node = Node(Path({str(root_tarball)!r}))
        node.boot()
        print(json.dumps({{"netns": node.netns, "workdir": str(node.workdir), "pid": node._proc.pid}}), flush=True)
        time.sleep(600)
        """
    )
    harness = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert harness.stdout is not None
        line = harness.stdout.readline()
        assert line, harness.communicate(timeout=30)[1]
        started = json.loads(line)
        assert Path("/run/netns", started["netns"]).exists()
        harness.send_signal(signum)
        _, stderr = harness.communicate(timeout=120)
    finally:
        if harness.poll() is None:
            harness.kill()
    assert harness.returncode == -signum, stderr  # the harness still dies of the signal, after teardown
    assert not Path("/run/netns", started["netns"]).exists()
    assert not Path(started["workdir"]).exists()
    assert not Path(f"/proc/{started['pid']}").exists()
    assert _without_nodes(host_network_snapshot()) == _without_nodes(before)
