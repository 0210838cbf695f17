"""sd_notify: a real unix datagram socket stands where systemd's would be."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from appliance.notify import notify
from tests.helpers import write_node


def test_no_socket_is_a_quiet_no_op() -> None:
    assert notify("READY=1", environ={}) is False


def test_message_reaches_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        assert notify("READY=1", "STATUS=ok", environ={"NOTIFY_SOCKET": str(path)}) is True
        assert listener.recv(4096) == b"READY=1\nSTATUS=ok"


def test_lpa_serve_is_ready_after_loading_and_says_when_stopping(tmp_path: Path, model_dir: Path) -> None:
    """As under a Type=notify unit: READY=1 once the models are loaded, STOPPING=1 on SIGTERM."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(120)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        node = write_node(
            tmp_path / "node.toml",
            model_dir=model_dir,
            listen=f"127.0.0.1:{port}",
            models=[{"model": "waifu2x-upconv7", "capability": "upscale"}],
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "serve", "--node", str(node)],
            env={**os.environ, "NOTIFY_SOCKET": str(path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ready = listener.recv(4096).decode()
            assert ready.startswith("READY=1\nSTATUS=serving 1 models"), ready
            time.sleep(0.2)
            worker.send_signal(signal.SIGTERM)
            assert listener.recv(4096) == b"STOPPING=1"
            assert worker.wait(timeout=30) in (0, -signal.SIGTERM)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
