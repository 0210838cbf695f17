"""The engine cache: engines keyed by everything they depend on, with a build record beside each.

``<model>.<gpu>.<precision>.<digest>.engine`` plus ``.json`` (the record: the full key, the TensorRT flavour and
version, the engine's sha256 and size, build time). Writes are atomic; a lock file stops two processes building
the same key; an engine is used only when its record matches the key asked for and its bytes match the record's
sha256 — anything else is refused with the reason (and rebuilt by ``build``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from appliance.atomic import sha256_file, write_bytes_atomically
from appliance.engines.plan import PlannedEngine

__all__ = ["BuildResult", "EngineCache", "tensorrt_label"]

_BUILD_TIMEOUT_S = 3600


def tensorrt_label(flavour: str) -> str:
    """``tensorrt-rtx 1.7.1.116``: the flavour and its installed version, part of every key."""
    distribution = {"tensorrt-rtx": "tensorrt-rtx-cu12", "tensorrt": "tensorrt"}[flavour]
    try:
        return f"{flavour} {version(distribution)}"
    except PackageNotFoundError:  # installed under another distribution name (NVIDIA's own index, say)
        return f"{flavour} unknown"


@dataclass(frozen=True)
class BuildResult:
    engine: PlannedEngine
    outcome: Literal["present", "built", "failed"]
    path: Path
    seconds: float
    reason: str = ""


class EngineCache:
    def __init__(self, directory: Path, *, flavour: str) -> None:
        self.directory = directory
        self.flavour = flavour
        self.tensorrt = tensorrt_label(flavour)

    def path_for(self, engine: PlannedEngine) -> Path:
        return self.directory / engine.file_name(tensorrt=self.tensorrt)

    def _expected_record(self, engine: PlannedEngine) -> dict[str, Any]:
        return {
            "key": json.loads(json.dumps(dataclasses.asdict(engine.key))),
            "tensorrt": self.tensorrt,
            "model": engine.model,
        }

    def refusal(self, engine: PlannedEngine) -> str | None:
        """Why the cached engine must not be used (missing, another key, corrupt), or None when it may."""
        path = self.path_for(engine)
        record_path = path.with_suffix(".json")
        if not path.is_file() or not record_path.is_file():
            return "not built"
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            return "its build record is not JSON"
        expected = self._expected_record(engine)
        for field in ("key", "tensorrt", "model"):
            if record.get(field) != expected[field]:
                return f"its record's {field} does not match ({record.get(field)!r})"
        if sha256_file(path) != record.get("engine_sha256"):
            return "its bytes do not match the sha256 in its record (corrupt)"
        return None

    @contextlib.contextmanager
    def _lock(self, engine: PlannedEngine) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.path_for(engine).with_suffix(".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # another process building the same key: wait for it
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def build(self, engine: PlannedEngine, onnx_path: Path) -> BuildResult:
        """Make the engine present and valid; never leaves a partial engine or a record without its engine."""
        path = self.path_for(engine)
        started = time.perf_counter()
        with self._lock(engine):
            if self.refusal(engine) is None:
                return BuildResult(engine, "present", path, 0.0)
            with tempfile.TemporaryDirectory(dir=self.directory) as workdir:
                out = Path(workdir) / "engine"
                spec = {
                    "flavour": self.flavour,
                    "onnx": str(onnx_path),
                    "out": str(out),
                    "precision": engine.key.precision,
                    "major": engine.gpu.major,
                    "minor": engine.gpu.minor,
                    "optimization_level": engine.key.optimization_level,
                    "profiles": [dataclasses.asdict(p) for p in engine.key.profiles],
                }
                (Path(workdir) / "spec.json").write_text(json.dumps(spec))
                process = subprocess.run(  # noqa: S603 (our own module, fixed arguments; a fresh process: builder.py)
                    [sys.executable, "-m", "appliance.engines.builder", str(Path(workdir) / "spec.json")],
                    capture_output=True,
                    text=True,
                    timeout=_BUILD_TIMEOUT_S,
                    check=False,
                )
                seconds = time.perf_counter() - started
                if process.returncode != 0 or not out.is_file():
                    reason = _builder_error(process)
                    return BuildResult(engine, "failed", path, seconds, reason)
                data = out.read_bytes()
            write_bytes_atomically(path, data)
            record = {
                **self._expected_record(engine),
                "engine_sha256": sha256_file(path),
                "engine_bytes": len(data),
                "build_seconds": round(seconds, 3),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            write_bytes_atomically(path.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
            return BuildResult(engine, "built", path, seconds)

    def records(self) -> list[tuple[Path, dict[str, Any]]]:
        found = []
        for record_path in sorted(self.directory.glob("*.json")):
            with contextlib.suppress(ValueError, OSError):
                found.append((record_path.with_suffix(".engine"), json.loads(record_path.read_text())))
        return found

    def prune(self, keep: list[PlannedEngine]) -> list[Path]:
        """Delete engines (and records) not in ``keep``; return what was deleted."""
        wanted = {self.path_for(engine) for engine in keep}
        removed = []
        for path in sorted(self.directory.glob("*.engine")):
            if path not in wanted:
                for stale in (path, path.with_suffix(".json"), path.with_suffix(".lock")):
                    stale.unlink(missing_ok=True)
                removed.append(path)
        return removed


def _builder_error(process: subprocess.CompletedProcess[str]) -> str:
    for line in reversed(process.stdout.splitlines()):
        with contextlib.suppress(ValueError):
            error = json.loads(line).get("error")
            if error:
                return str(error)
    tail = (process.stderr or process.stdout).strip().splitlines()[-1:] or ["no output"]
    return f"builder exited {process.returncode}: {tail[0][:300]}"
