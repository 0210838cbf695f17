"""How the benchmark starts, waits for, calls and stops each server, and measures its process tree's memory.

Every server is started in a session of its own (``start_new_session``), so its whole process tree (Ray's GCS,
raylet and workers, Triton's server and stubs, BentoML's arbiter and workers) is found by session id and parent
links, sampled for memory, and stopped by PID: SIGINT to the roots first (each server's graceful stop), then
SIGTERM/SIGKILL to each remaining member, by PID, that this benchmark started.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from harness import BenchError, free_port, lpa_command, node_file, tail  # bench/: run.py puts it on sys.path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA_URL_PREFIX = "data:image/png;base64,"
UPSCALE = "waifu2x-upconv7"


@dataclass
class PeerEnv:
    """The peers' virtual environment."""

    python: Path
    versions: dict[str, str]
    libdir: str  # the interpreter's LIBDIR (libpython3.X.so), for PyTriton's stub

    @property
    def bin(self) -> Path:
        return self.python.parent


@dataclass
class Context:
    model_dir: Path
    intra_op_threads: int
    workdir: Path
    peer: PeerEnv | None
    inference_niceness: int
    capacity: int = 1
    queue: int = 7
    catalog_capabilities: Mapping[str, str] = field(default_factory=dict)
    skip_reason: str = ""  # why the peers' venv is not there, when it is not

    def peer_env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=f"{REPO}{os.pathsep}{HERE}",
            RAY_USAGE_STATS_ENABLED="0",
            BENTOML_DO_NOT_TRACK="true",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env


@dataclass
class Launched:
    process: subprocess.Popen[bytes]
    log: Path


def launch(
    command: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Launched:
    with log.open("wb") as handle:
        process = subprocess.Popen(  # a session of its own: the whole tree is found, sampled and stopped by it
            list(command),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return Launched(process, log)


# --- the servers -----------------------------------------------------------------------------------------------


class Server:
    """One server under test: how to start it, when it is ready, how to call it and its liveness route."""

    name = "?"
    key = "?"
    needs_peer_env = True
    description = ""

    def __init__(self, ctx: Context, models: Sequence[str]) -> None:
        self.ctx, self.models = ctx, list(models)
        self.launched: list[Launched] = []

    def start(self) -> list[Launched]:
        raise NotImplementedError

    def ready(self, client: httpx.Client) -> bool:
        raise NotImplementedError

    def post(self, client: httpx.Client, model: str, png: bytes) -> httpx.Response:
        raise NotImplementedError

    def output_png(self, response: httpx.Response) -> bytes:
        url = response.json()["images"][0]["url"]
        if not url.startswith(DATA_URL_PREFIX):
            raise BenchError(f"{self.name}: unexpected image URL {url[:40]!r}")
        return base64.b64decode(url[len(DATA_URL_PREFIX) :])

    def liveness_url(self, model: str) -> str:
        raise NotImplementedError

    def work_snapshot(self, client: httpx.Client, model: str) -> tuple[float, float] | None:
        """(seconds of work done, requests done) for ``model`` as the server itself counts them, where it does."""
        return None

    def settings(self) -> dict[str, Any]:
        return {}

    def cleanup(self) -> None:
        """Remove what the server left behind, once it has stopped."""

    def _log(self, stem: str) -> Path:
        return self.ctx.workdir / f"{self.key}-{stem}.log"

    @property
    def peer(self) -> PeerEnv:
        if self.ctx.peer is None:
            raise BenchError("the peers' virtual environment is not available")
        return self.ctx.peer


def _multipart(png: bytes) -> dict[str, tuple[str, bytes, str]]:
    # go-livepeer sends the image part as application/octet-stream; every server gets the same bytes
    return {"image": ("image.png", png, "application/octet-stream")}


class Lpa(Server):
    """This worker, as ``lpa serve`` runs it, from a node file the benchmark writes."""

    name = "lpa serve"
    key = "lpa"
    needs_peer_env = False

    def __init__(self, ctx: Context, models: Sequence[str]) -> None:
        super().__init__(ctx, models)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.niceness = ctx.inference_niceness

    def node_toml(self) -> str:
        worker = {
            "listen": f"127.0.0.1:{self.port}",
            "model_dir": self.ctx.model_dir,
            "intra_op_threads": self.ctx.intra_op_threads,
            "inference_niceness": self.niceness,
            "log_level": "info",
        }
        served = {"capacity": self.ctx.capacity, "queue": self.ctx.queue, "warm": True}
        capabilities = self.ctx.catalog_capabilities
        return node_file(worker, [{"model": n, "capability": capabilities[n], **served} for n in self.models])

    def start(self) -> list[Launched]:
        node = self.ctx.workdir / "node.toml"
        node.write_text(self.node_toml(), encoding="utf-8")
        command = [*lpa_command(), "serve", "--node", str(node), "--listen", f"127.0.0.1:{self.port}"]
        return [launch([*self.run_under(), *command], self._log("server"))]

    def run_under(self) -> list[str]:
        """A command that ``lpa serve`` runs under (none: started as it is)."""
        return []

    def ready(self, client: httpx.Client) -> bool:
        status = client.get(f"{self.base}/health").json().get("status")
        if status == "ERROR":
            raise BenchError(f"a model failed to load: {client.get(f'{self.base}/models').text}")
        return status == "OK"

    def post(self, client: httpx.Client, model: str, png: bytes) -> httpx.Response:
        capability = self.ctx.catalog_capabilities[model]
        data = {"prompt": "upscale"} if capability == "upscale" else {}
        url = f"{self.base}/m/{capability}/{model}/{capability}"
        return client.post(url, files=_multipart(png), data=data)

    def liveness_url(self, model: str) -> str:
        return f"{self.base}/health"

    def work_snapshot(self, client: httpx.Client, model: str) -> tuple[float, float] | None:
        """The worker's own decode + pipeline + encode time, summed (``lpa_inference_seconds`` in /metrics)."""
        label = f'{{model="{self.ctx.catalog_capabilities[model]}/{model}"}}'
        total = count = None
        for line in client.get(f"{self.base}/metrics").text.splitlines():
            if line.startswith(f"lpa_inference_seconds_sum{label} "):
                total = float(line.rsplit(" ", 1)[1])
            elif line.startswith(f"lpa_inference_seconds_count{label} "):
                count = float(line.rsplit(" ", 1)[1])
        return (total, count) if total is not None and count is not None else None

    def settings(self) -> dict[str, Any]:
        return {
            "capacity": self.ctx.capacity,
            "queue": self.ctx.queue,
            "intra_op_threads": self.ctx.intra_op_threads,
            "inference_niceness": self.niceness,
            "node_toml": self.node_toml(),
        }


class LpaNice0(Lpa):
    """The same, with ``inference_niceness = 0``: what the default (inference threads at a lowered priority, so
    that the event loop wins the CPU inside the worker) costs or gains here, where no unit's ``Nice=-5`` lifts the
    worker. The two rows are also the same code measured minutes apart, a direct reading of the host's noise."""

    name = "lpa serve, niceness 0"
    key = "lpa-nice0"

    def __init__(self, ctx: Context, models: Sequence[str]) -> None:
        super().__init__(ctx, models)
        self.niceness = 0


class LpaAsItsUnit(Lpa):
    """The node file's defaults started at the worker unit's ``Nice=`` (systemd/units.toml), as systemd starts it
    on a provisioned node: the event loop above the benchmark's other processes, inference at their level.
    Lowering a nice value needs root (systemd is root when it applies it), so elsewhere this row is skipped."""

    name = "lpa serve, unit's Nice"
    key = "lpa-unit"

    def run_under(self) -> list[str]:
        with (REPO / "systemd" / "units.toml").open("rb") as handle:
            nice = int(tomllib.load(handle)["units"]["livepeer-worker@.service"]["Service"]["Nice"])
        if os.geteuid() != 0:
            raise BenchError(f"starting at the unit's Nice={nice} needs root, as systemd has")
        return ["nice", "-n", str(nice)]  # from exec on: every thread it starts inherits it


class AiRunner(Server):
    """The ai-runner design (FastAPI + uvicorn, ``async def`` routes calling the model synchronously), one process
    per model as ai-runner runs one container per model."""

    name = "ai-runner design"
    key = "ai-runner"

    def __init__(self, ctx: Context, models: Sequence[str]) -> None:
        super().__init__(ctx, models)
        self.ports = {name: free_port() for name in models}

    def start(self) -> list[Launched]:
        launched = []
        for name, port in self.ports.items():
            command = [str(self.peer.python), str(HERE / "airunner_app.py"), "--model", name, "--port", str(port)]
            command += ["--model-dir", str(self.ctx.model_dir), "--intra-op-threads", str(self.ctx.intra_op_threads)]
            launched.append(launch(command, self._log(name), env=self.ctx.peer_env()))
        return launched

    def ready(self, client: httpx.Client) -> bool:
        return all(client.get(f"http://127.0.0.1:{port}/health").status_code == 200 for port in self.ports.values())

    def post(self, client: httpx.Client, model: str, png: bytes) -> httpx.Response:
        base = f"http://127.0.0.1:{self.ports[model]}"
        if model == UPSCALE:
            return client.post(f"{base}/upscale", files=_multipart(png), data={"prompt": "upscale"})
        return client.post(f"{base}/segmentation", files=_multipart(png))

    def liveness_url(self, model: str) -> str:
        return f"http://127.0.0.1:{self.ports[model]}/health"

    def settings(self) -> dict[str, Any]:
        return {"processes": "one uvicorn process per model", "workers": 1, "ports": self.ports}


class Triton(Server):
    """NVIDIA Triton through PyTriton, dynamic batcher on; KServe v2 HTTP with binary tensors."""

    name = "Triton (PyTriton)"
    key = "triton"

    def __init__(self, ctx: Context, models: Sequence[str]) -> None:
        super().__init__(ctx, models)
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http}"

    def start(self) -> list[Launched]:
        command = [str(self.peer.python), str(HERE / "triton_server.py"), "--models", *self.models]
        command += ["--model-dir", str(self.ctx.model_dir), "--intra-op-threads", str(self.ctx.intra_op_threads)]
        command += ["--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics)]
        library_path = os.pathsep.join(p for p in (self.peer.libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)
        return [launch(command, self._log("server"), env=self.ctx.peer_env(LD_LIBRARY_PATH=library_path))]

    def ready(self, client: httpx.Client) -> bool:
        # the server is ready before PyTriton has loaded the models: ask each model
        return all(client.get(f"{self.base}/v2/models/{name}/ready").status_code == 200 for name in self.models)

    def post(self, client: httpx.Client, model: str, png: bytes) -> httpx.Response:
        blob = struct.pack("<I", len(png)) + png  # one BYTES element: 4-byte length, then the bytes
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1, 1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(blob)},
                    }
                ],
                "outputs": [{"name": "url", "parameters": {"binary_data": True}}],
            }
        ).encode()
        headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
        return client.post(f"{self.base}/v2/models/{model}/infer", content=header + blob, headers=headers)

    def output_png(self, response: httpx.Response) -> bytes:
        length = int(response.headers["Inference-Header-Content-Length"])
        binary = response.content[length:]
        (size,) = struct.unpack_from("<I", binary)
        url = binary[4 : 4 + size].decode("ascii")
        if not url.startswith(DATA_URL_PREFIX):
            raise BenchError(f"{self.name}: unexpected output {url[:40]!r}")
        return base64.b64decode(url[len(DATA_URL_PREFIX) :])

    def liveness_url(self, model: str) -> str:
        return f"{self.base}/v2/health/live"

    def settings(self) -> dict[str, Any]:
        return {"max_batch_size": 8, "dynamic_batcher": "DynamicBatcher() defaults", "instances_per_model": 1}


class RayServe(Server):
    """Ray Serve: a local Ray cluster, one application (FastAPI ingress deployment) per model."""

    name = "Ray Serve"
    key = "ray"

    def __init__(self, ctx: Context, models: Sequence[str]) -> None:
        super().__init__(ctx, models)
        self.port, self.dashboard = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.temp_dir = ""

    def start(self) -> list[Launched]:
        self.temp_dir = tempfile.mkdtemp(prefix="lpa-ray-", dir="/tmp")  # short: Ray puts Unix sockets in it
        command = [str(self.peer.python), str(HERE / "ray_app.py"), "--models", *self.models]
        command += ["--model-dir", str(self.ctx.model_dir), "--intra-op-threads", str(self.ctx.intra_op_threads)]
        command += ["--port", str(self.port), "--dashboard-port", str(self.dashboard), "--temp-dir", self.temp_dir]
        # Ray looks for `uv run` among the driver's ancestors (as when this benchmark runs under `uv run`) and then
        # starts its workers with `uv run` in the working tree's project, without Ray: keep its workers in the venv.
        env = self.ctx.peer_env(RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
        return [launch(command, self._log("server"), env=env)]

    def ready(self, client: httpx.Client) -> bool:
        if "all applications running" not in tail(self.launched[0].log, 400):
            return False
        routes = client.get(f"{self.base}/-/routes").json()
        return all(f"/{name}" in routes for name in self.models)

    def post(self, client: httpx.Client, model: str, png: bytes) -> httpx.Response:
        return client.post(f"{self.base}/{model}/infer", files=_multipart(png))

    def liveness_url(self, model: str) -> str:
        return f"{self.base}/-/healthz"

    def cleanup(self) -> None:
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def settings(self) -> dict[str, Any]:
        return {"num_replicas": 1, "max_ongoing_requests": "default (5)", "ray_actor_options": {"num_cpus": 1}}


class BentoML(Server):
    """BentoML: one class-based service with one API per model."""

    name = "BentoML"
    key = "bentoml"

    def __init__(self, ctx: Context, models: Sequence[str]) -> None:
        super().__init__(ctx, models)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> list[Launched]:
        command = [str(self.peer.bin / "bentoml"), "serve", "bento_service:Peers", "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        env = self.ctx.peer_env(
            LPA_PEERS_MODELS=",".join(self.models),
            LPA_PEERS_MODEL_DIR=str(self.ctx.model_dir),
            LPA_PEERS_INTRA_OP_THREADS=str(self.ctx.intra_op_threads),
        )
        return [launch(command, self._log("server"), env=env, cwd=HERE)]

    def ready(self, client: httpx.Client) -> bool:
        return client.get(f"{self.base}/readyz").status_code == 200

    def post(self, client: httpx.Client, model: str, png: bytes) -> httpx.Response:
        api = "upscale" if model == UPSCALE else "segmentation"
        return client.post(f"{self.base}/{api}", files=_multipart(png))

    def liveness_url(self, model: str) -> str:
        return f"{self.base}/livez"

    def settings(self) -> dict[str, Any]:
        return {"resources": {"cpu": "2"}, "workers": "default (1)", "threads": "default (1)", "timeout_s": 300}


SERVERS: dict[str, type[Server]] = {
    "lpa": Lpa,
    "lpa-nice0": LpaNice0,
    "lpa-unit": LpaAsItsUnit,
    "ai-runner": AiRunner,
    "triton": Triton,
    "ray": RayServe,
    "bentoml": BentoML,
}


# --- process trees -------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, session id, start time) of a live process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return int(fields[1]), int(fields[3]), int(fields[19])


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB; PSS splits shared pages between the processes that share them."""
    rss = pss = 0
    try:
        rss = (
            int(Path(f"/proc/{pid}/statm").read_text(encoding="ascii").split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        )
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="ascii").splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
                break
    except (OSError, ValueError, IndexError):
        pass
    return rss, pss


class ProcessTree:
    """The processes of the servers this benchmark started: sampled for memory, stopped by PID."""

    def __init__(self, roots: Sequence[int], interval: float = 0.25) -> None:
        self.roots = list(roots)
        self.interval = interval
        self.known: dict[int, int] = {}  # pid → start time (a PID is only ours while its start time matches)
        self.peak_rss_kb = self.peak_pss_kb = self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def members(self) -> dict[int, int]:
        table: dict[int, tuple[int, int, int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
                table[int(entry.name)] = stat
        found = {pid: stat[2] for pid, stat in table.items() if stat[1] in self.roots or pid in self.roots}
        frontier = list(found)
        while frontier:  # children that left the session are still descendants
            parent = frontier.pop()
            for pid, (ppid, _sid, start) in table.items():
                if ppid == parent and pid not in found:
                    found[pid] = start
                    frontier.append(pid)
        return found

    def sample(self) -> None:
        members = self.members()
        self.known.update(members)
        rss = pss = 0
        for pid in members:
            r, p = _memory_kb(pid)
            rss, pss = rss + r, pss + p
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.peak_processes = max(self.peak_processes, len(members))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop_sampling(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def report(self) -> dict[str, Any]:
        return {
            "peak_rss_mib": self.peak_rss_kb / 1024,
            "peak_pss_mib": self.peak_pss_kb / 1024,
            "peak_processes": self.peak_processes,
        }

    def _alive_ours(self) -> list[int]:
        return [pid for pid, start in self.known.items() if (stat := _proc_stat(pid)) is not None and stat[2] == start]

    def terminate(self, launched: Sequence[Launched], grace: float = 30.0) -> list[int]:
        """SIGINT to the roots (graceful stop), then SIGTERM and SIGKILL to each remaining member, by PID.
        Returns the PIDs that had to be killed."""
        self.known.update(self.members())
        for item in launched:
            if item.process.poll() is None:
                item.process.send_signal(signal.SIGINT)
        end = time.monotonic() + grace
        while time.monotonic() < end and any(item.process.poll() is None for item in launched):
            time.sleep(0.2)
        self.known.update(self.members())
        killed: list[int] = []
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            leftovers = self._alive_ours()
            for pid in leftovers:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    continue
                if pid not in killed:
                    killed.append(pid)
            if leftovers:
                time.sleep(wait)
        for item in launched:
            if item.process.poll() is None:
                item.process.wait(5)
        return killed
