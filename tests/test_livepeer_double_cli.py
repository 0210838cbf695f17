"""The go-livepeer double as provisioning installs it: the release tarball, unpacked and run by the system python3.

Against a real ``lpa serve`` (handshake, /status, /metrics, BYOC, an upscale through the double, SIGTERM) and
against stub runners (ERROR, not ready, a remote worker), plus go-livepeer's command line, config file and
``LP_`` variables, and the tarball's determinism.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.doubles.orchestrator import go_multipart, parse_multipart
from tests.doubles.release import MTIME, NAME, TARBALL, build_release
from tests.helpers import REPO, png_bytes
from tests.test_livepeer_e2e import SECRET, TOKEN, _free_port, _node, _wait

PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
DOUBLES = REPO / "tests" / "doubles"


@pytest.fixture(scope="module")
def livepeer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release tarball, built and unpacked as a node would: the path of its ``livepeer``."""
    out = tmp_path_factory.mktemp("release")
    tarball, _ = build_release(out)
    with tarfile.open(tarball) as archive:
        archive.extractall(out / "unpacked", filter="data")
    return out / "unpacked" / NAME / "livepeer"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """A bare environment: no venv, no PYTHONPATH, no Docker daemon (a socket path that does not exist)."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "DOCKER_HOST": f"unix://{tmp}/no-docker.sock", **extra}


def _run(livepeer: Path, *args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-I", str(livepeer), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


class Running:
    """A serving double: started, its /status polled until it answers, stopped with a signal."""

    def __init__(self, livepeer: Path, args: list[str], env: dict[str, str], cli_port: int, log: Path) -> None:
        self.cli = f"http://127.0.0.1:{cli_port}"
        self.log_path = log
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [PYTHON, "-I", str(livepeer), *args], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def status(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the double exited with {self.process.returncode}:\n{self.log()}")
            try:
                answer = httpx.get(f"{self.cli}/status", timeout=2)
                if answer.status_code == 200:
                    status: dict[str, Any] = answer.json()
                    return status
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the double's /status did not answer:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, float]:
        start = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=10)
        return code, time.monotonic() - start

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for double in started:
        double.close()


class StubRunner:
    """An external runner that answers /health with a fixed status (and /hardware/info, /version)."""

    def __init__(self, health: str, *, pipeline: str = "upscale", model_id: str = "stub-model") -> None:
        reply = {
            "/health": {"status": health},
            "/hardware/info": {"pipeline": pipeline, "model_id": model_id, "gpu_info": {}},
            "/version": {"pipeline": pipeline, "model_id": model_id, "version": "0.0.1"},
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(reply.get(self.path.removeprefix("/m"), {"detail": {"msg": "no"}})).encode()
                self.send_response(200 if self.path.removeprefix("/m") in reply else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/m"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ai_models(self, path: Path, **entry: Any) -> Path:
        path.write_text(json.dumps([{"pipeline": "upscale", "model_id": "stub-model", "url": self.url, **entry}]))
        return path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_ok() -> Iterator[StubRunner]:
    stub = StubRunner("OK")
    yield stub
    stub.close()


# --- the artifact ----------------------------------------------------------------------------------------------


def test_tarball_is_byte_identical_across_builds_and_laid_out_as_a_release(tmp_path: Path) -> None:
    first, first_sha = build_release(tmp_path / "a")
    built = subprocess.run(
        [PYTHON, "-m", "tests.doubles.release", str(tmp_path / "b")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        check=True,
    )
    second = tmp_path / "b" / TARBALL
    assert built.stdout.split() == [str(second), first_sha]
    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "b" / f"{TARBALL}.sha256").read_text() == f"{first_sha}  {TARBALL}\n"
    with tarfile.open(first) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert sorted(members) == [NAME, f"{NAME}/README-DOUBLE.txt", f"{NAME}/livepeer"]
        assert {(m.uid, m.gid, m.uname, m.mtime) for m in members.values()} == {(0, 0, "root", MTIME)}
        assert members[f"{NAME}/livepeer"].mode == 0o755 and members[f"{NAME}/README-DOUBLE.txt"].mode == 0o644
        launcher = archive.extractfile(f"{NAME}/livepeer")
        assert launcher is not None
        text = launcher.read().decode()
    assert text.startswith("#!/usr/bin/env python3\n") and "double of go-livepeer" in text.splitlines()[1]
    assert text.endswith((DOUBLES / "orchestrator.py").read_text())


def test_double_and_release_import_only_the_standard_library() -> None:
    for path in (DOUBLES / "orchestrator.py", DOUBLES / "release.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
        assert imported - sys.stdlib_module_names - {"__future__"} == set(), path


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs /usr/bin/python3 for the shebang")
def test_the_unpacked_launcher_runs_by_itself(livepeer: Path, tmp_path: Path) -> None:
    version = subprocess.run(
        [str(livepeer), "-version"], capture_output=True, text=True, env=_env(tmp_path), check=False
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.splitlines()[0] == "Livepeer Node Version: 0.9.1"
    assert "double of go-livepeer" in version.stdout


# --- go-livepeer's command line, -config file and LP_ variables --------------------------------------------------


def test_command_line_errors_are_go_flag_errors(livepeer: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    unknown = _run(livepeer, "-orchestrator", "-nope", "1", env=env)
    assert unknown.returncode == 2
    assert unknown.stdout.startswith("flag provided but not defined: -nope\nUsage of ")
    bad_bool = _run(livepeer, "--aiWorker=maybe", env=env)
    assert bad_bool.returncode == 2 and 'invalid boolean value "maybe" for -aiWorker: parse error' in bad_bool.stdout
    no_value = _run(livepeer, "-cliAddr", env=env)
    assert no_value.returncode == 2 and "flag needs an argument: -cliAddr" in no_value.stdout
    bad_int = _run(livepeer, "-gasLimit", "lots", env=env)
    assert bad_int.returncode == 2 and 'invalid value "lots" for flag -gasLimit: parse error' in bad_int.stdout
    helped = _run(livepeer, "-help", env=env)
    assert helped.returncode == 0 and "  -aiModels string" in helped.stdout
    nothing = _run(livepeer, env=env)
    assert nothing.returncode == 2 and "No services enabled" in nothing.stderr


def test_config_file_and_environment_errors_exit_1_like_glog_exit(livepeer: Path, tmp_path: Path) -> None:
    config = tmp_path / "livepeer.conf"
    config.write_text("# rendered\nnetwork offchain\norchestrator\nbogus 1\n")
    unknown = _run(livepeer, "-config", str(config), env=_env(tmp_path))
    assert unknown.returncode == 1
    assert 'Error parsing config: config file flag "bogus" not defined in flag set' in unknown.stderr
    assert unknown.stderr.startswith("F")  # glog's FATAL line
    config.write_text("network\toffchain\n")  # ff splits at the first space only: a tab makes one unknown name
    assert _run(livepeer, "-config", str(config), env=_env(tmp_path)).returncode == 1
    missing = _run(livepeer, "-config", str(tmp_path / "absent.conf"), env=_env(tmp_path))
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr
    bad_env = _run(livepeer, "-orchestrator", env=_env(tmp_path, LP_MONITOR="loud"))
    assert bad_env.returncode == 1
    assert 'error setting flag "monitor" from env var "LP_MONITOR": parse error' in bad_env.stderr


def test_precedence_is_command_line_then_environment_then_file(
    livepeer: Path, tmp_path: Path, running: list[Running]
) -> None:
    cli_port = _free_port()
    secret = tmp_path / "orch-secret"
    secret.write_text("s3cret\n")
    config = tmp_path / "livepeer.conf"
    config.write_text(
        "# go-livepeer's -config file\n"
        "network offchain\n"
        "orchestrator\n"
        "monitor\n"  # a bare name: true
        f"orchSecret {secret}\n"
        f"cliAddr 127.0.0.1:{cli_port}\n"
        "v 4\n"
        "maxSessions 7\n"
        "gatewayHost from-the-file   # an end-of-line comment\n"
    )
    env = _env(tmp_path, LP_V="5", LP_MAXSESSIONS="8", LP_DATADIR=str(tmp_path / "lpdata"))
    double = Running(livepeer, ["-config", str(config), "-v=6"], env, cli_port, tmp_path / "double.log")
    running.append(double)
    status = double.status()
    assert status["mode"] == "orchestrator" and status["ai_models"] == []
    flags, sources = status["flags"], status["flag_sources"]
    assert (flags["v"], sources["v"]) == ("6", "command line")
    assert (flags["maxSessions"], sources["maxSessions"]) == ("8", "environment")
    assert (flags["gatewayHost"], sources["gatewayHost"]) == ("from-the-file", "config file")
    assert (flags["monitor"], sources["monitor"]) == ("true", "config file")
    assert flags["orchSecret"] == f"<file {secret}>" and "s3cret" not in json.dumps(status)
    assert (tmp_path / "lpdata" / "lpdb.sqlite3").exists()
    metrics = httpx.get(f"{double.cli}/metrics", timeout=5)
    assert metrics.status_code == 200 and 'livepeer_versions{livepeer_version="0.9.1"' in metrics.text
    code, seconds = double.stop(signal.SIGINT)
    assert code == 0 and seconds < 5
    assert "-serviceAddr not set" in double.log() and "Exiting Livepeer: interrupt" in double.log()


# --- start-up against stub runners -------------------------------------------------------------------------------


def test_a_runner_answering_error_stops_the_start(livepeer: Path, tmp_path: Path) -> None:
    stub = StubRunner("ERROR")
    try:
        models = stub.ai_models(tmp_path / "aiModels.json")
        result = _run(
            livepeer,
            "-orchestrator",
            "-aiWorker",
            "-aiModels",
            str(models),
            "-cliAddr",
            "127.0.0.1:1",
            env=_env(tmp_path),
        )
    finally:
        stub.close()
    # go-livepeer logs the error and StartLivepeer returns: the node never serves, and main exits 0.
    assert result.returncode == 0
    assert "Error AI worker warming upscale container: stub-model: runner is in error state" in result.stderr
    assert "Running in Orchestrator Mode" not in result.stderr and "Graceful shutdown complete" in result.stderr


def test_a_runner_not_ready_in_time_stops_the_start_and_sigterm_is_prompt(
    livepeer: Path, tmp_path: Path, running: list[Running]
) -> None:
    models = tmp_path / "aiModels.json"
    models.write_text(json.dumps([{"pipeline": "upscale", "model_id": "m", "url": f"http://127.0.0.1:{_free_port()}"}]))
    args = ["-orchestrator", "-aiWorker", "-aiModels", str(models)]
    late = _run(livepeer, *args, env=_env(tmp_path, LIVEPEER_DOUBLE_RUNNER_TIMEOUT_S="1"))
    assert late.returncode == 0 and "m: timed out waiting for runner" in late.stderr
    waiting = Running(livepeer, args, _env(tmp_path), _free_port(), tmp_path / "waiting.log")
    running.append(waiting)
    _wait(lambda: "Runner not reachable yet" in waiting.log(), 10, "the handshake")
    code, seconds = waiting.stop()
    assert code == 0 and seconds < 3 and "Exiting Livepeer: terminated" in waiting.log()


def test_ai_models_refusals_are_go_livepeers(livepeer: Path, tmp_path: Path, stub_ok: StubRunner) -> None:
    clash = tmp_path / "clash.json"
    entry = {"pipeline": "upscale", "url": stub_ok.url, "model_id": "same"}
    clash.write_text(json.dumps([{**entry, "warm": True}, {**entry, "warm": False}]))
    panicked = _run(livepeer, "-orchestrator", "-aiWorker", "-aiModels", str(clash), env=_env(tmp_path))
    assert panicked.returncode == 2
    assert "\npanic: Cannot have same model_id (same) as cold and warm" in panicked.stderr
    quoted = tmp_path / "quoted.json"
    quoted.write_text(json.dumps([{**entry, "price_per_unit": "0.5e-2USD", "pixels_per_unit": 1}]))
    refused = _run(livepeer, "-orchestrator", "-aiWorker", "-aiModels", str(quoted), env=_env(tmp_path))
    assert refused.returncode == 0 and "Error parsing -aiModels: price_per_unit: big.Rat.SetString" in refused.stderr
    unknown = stub_ok.ai_models(tmp_path / "unknown.json", pipeline="depth")
    assert _run(livepeer, "-orchestrator", "-aiWorker", "-aiModels", str(unknown), env=_env(tmp_path)).returncode == 2


def test_without_docker_it_goes_on_unless_told_to_stop_as_go_livepeer(
    livepeer: Path, tmp_path: Path, stub_ok: StubRunner
) -> None:
    models = stub_ok.ai_models(tmp_path / "aiModels.json")
    env = _env(tmp_path, LIVEPEER_DOUBLE_REQUIRE_DOCKER="1")
    stopped = _run(livepeer, "-orchestrator", "-aiWorker", "-aiModels", str(models), env=env)
    assert stopped.returncode == 0
    assert f"Error starting AI worker: Cannot connect to the Docker daemon at {env['DOCKER_HOST']}." in stopped.stderr
    assert "Waiting for runner" not in stopped.stderr


def test_remote_worker_needs_the_orch_secret_then_serves_its_status(
    livepeer: Path, tmp_path: Path, stub_ok: StubRunner, running: list[Running]
) -> None:
    models = stub_ok.ai_models(tmp_path / "aiModels.json")
    args = ["-aiWorker", "-aiModels", str(models), "-orchAddr", "10.0.0.1:8935", "-datadir", str(tmp_path / "d")]
    no_secret = _run(livepeer, *args, "-cliAddr", f"127.0.0.1:{_free_port()}", env=_env(tmp_path))
    assert no_secret.returncode == 1 and "Missing -orchSecret" in no_secret.stderr
    assert "Started runner with version" in no_secret.stderr  # go-livepeer checks it after the handshakes
    cli_port = _free_port()
    worker = Running(
        livepeer,
        [*args, "-orchSecret", "literal-secret", "-cliAddr", f"127.0.0.1:{cli_port}"],
        _env(tmp_path),
        cli_port,
        tmp_path / "worker.log",
    )
    running.append(worker)
    status = worker.status()
    assert status["mode"] == "ai-worker" and status["flags"]["orchSecret"] == "***"
    [entry] = status["ai_models"]
    assert (entry["status"], entry["runner_version"], entry["version_echoes_entry"]) == ("OK", "0.0.1", True)
    assert "would now connect to the orchestrator at 10.0.0.1:8935" in worker.log()
    assert httpx.get(f"{worker.cli}/metrics", timeout=5).status_code == 404  # no -monitor
    assert worker.stop()[0] == 0


# --- against a real `lpa serve` ----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_real_worker_handshake_status_byoc_upscale_and_sigterm(
    livepeer: Path, tmp_path_factory: pytest.TempPathFactory, model_dir: Path, running: list[Running]
) -> None:
    tmp = tmp_path_factory.mktemp("double-cli")
    worker_port, service_port, cli_port = _free_port(), _free_port(), _free_port()
    node = _node(tmp, model_dir, f"http://127.0.0.1:{service_port}", worker_port)
    node.write_text(
        node.read_text().replace("[orchestrator]\n", f'[orchestrator]\nservice_addr = "127.0.0.1:{service_port}"\n')
    )
    lpa = [sys.executable, "-m", "appliance.cli"]
    rendered = subprocess.run([*lpa, "render", "--node", str(node)], capture_output=True, text=True, check=False)
    assert rendered.returncode == 0, rendered.stderr
    config = tmp / "rendered" / "livepeer.conf"
    assert f"serviceAddr 127.0.0.1:{service_port}" in config.read_text()
    with (tmp / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [*lpa, "serve", "--node", str(node)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            # As systemd orders them: the worker is READY (models loaded) before go-livepeer starts.
            _wait(lambda: _health(worker_port) == "OK", 60, "the worker")
            double = Running(
                livepeer,
                [
                    "-config",
                    str(config),
                    "-datadir",
                    str(tmp / "lpdata"),
                    "-httpAddr",
                    f"127.0.0.1:{service_port}",
                    "-cliAddr",
                    f"127.0.0.1:{cli_port}",
                ],
                _env(tmp),
                cli_port,
                tmp / "double.log",
            )
            running.append(double)
            status = double.status()
            [entry] = status["ai_models"]
            assert (entry["pipeline"], entry["model_id"], entry["status"]) == ("upscale", "waifu2x-upconv7", "OK")
            assert entry["url"] == f"http://127.0.0.1:{worker_port}/m/upscale/waifu2x-upconv7" and entry["token_set"]
            assert entry["version_echoes_entry"] and entry["runner_version"]
            assert (entry["pixels_per_unit"], entry["currency"]) == (str(512 * 512), "USD")
            assert status["service_uri"] == f"https://127.0.0.1:{service_port}"
            assert status["flags"]["aiWorker"] == "true" and status["flag_sources"]["aiModels"] == "config file"
            assert status["flags"]["orchSecret"] == f"<file {tmp / 'secret'}>"
            assert TOKEN not in json.dumps(status) and SECRET not in json.dumps(status)

            # The worker registers its BYOC capability with the double's orchestrator port (the orchSecret).
            _wait(lambda: "depth" in double.status()["byoc"], 30, "the BYOC registration")
            metrics = httpx.get(f"{double.cli}/metrics", timeout=5).text
            assert 'livepeer_ai_runner_ready{pipeline="upscale",model_id="waifu2x-upconv7"} 1' in metrics

            # A job through the double's forwarder reaches the worker as go-livepeer's client sends it.
            body, content_type = go_multipart({"model_id": "waifu2x-upconv7", "seed": "5"}, "image", png_bytes(40, 30))
            job = httpx.post(
                f"http://127.0.0.1:{service_port}/upscale",
                content=body,
                timeout=60,
                headers={"Content-Type": content_type},
            )
            assert job.status_code == 200, job.text
            image = job.json()["images"][0]
            assert image["url"].startswith("data:image/png;base64,") and image["seed"] == 5

            code, seconds = double.stop()
            assert code == 0 and seconds < 5
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    log_text = double.log()
    for line in (
        "no Docker daemon",
        "Waiting for runner pipeline=upscale model_id=waifu2x-upconv7",
        "Runner health model_id=waifu2x-upconv7 status=OK",
        "Runner hardware info model_id=waifu2x-upconv7",
        "Started runner with version",
        "***Livepeer Running in Orchestrator Mode***",
        "Exiting Livepeer: terminated",
        "Graceful shutdown complete",
    ):
        assert line in log_text, line


def _health(port: int) -> str | None:
    try:
        answer = httpx.get(
            f"http://127.0.0.1:{port}/m/upscale/waifu2x-upconv7/health",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=2,
        )
    except httpx.TransportError:
        return None
    return str(answer.json().get("status")) if answer.status_code == 200 else None


def test_the_forwarder_parses_what_go_livepeers_client_sends() -> None:
    body, content_type = go_multipart({"model_id": "x", "seed": "1"}, "image", b"\x89PNG\r\n")
    assert parse_multipart(body, content_type) == {"model_id": b"x", "seed": b"1", "image": b"\x89PNG\r\n"}
