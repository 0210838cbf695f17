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
import hashlib
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

__all__ = ["BuildResult", "EngineCache", "EngineRefused", "tensorrt_label"]

_BUILD_TIMEOUT_S = 3600


def tensorrt_label(flavour: str) -> str:
    """``tensorrt-rtx 1.7.1.116``: the flavour and its installed version, part of every key."""
    distribution = {"tensorrt-rtx": "tensorrt-rtx-cu12", "tensorrt": "tensorrt"}[flavour]
    try:
        return f"{flavour} {version(distribution)}"
    except PackageNotFoundError:  # installed under another distribution name (NVIDIA's own index, say)
        return f"{flavour} unknown"


class EngineRefused(Exception):
    """A cached engine must not be used on this host; the message says why (missing, another key, corrupt)."""


# Key fields as an operator would name them, for reasons like "built for NVIDIA GeForce RTX 4090 sm_89".
_KEY_WORDS = {
    "onnx_sha256": "ONNX sha256",
    "precision": "precision",
    "profiles": "shape profiles",
    "hardware_compatibility": "hardware compatibility",
    "optimization_level": "optimization level",
    "appliance_version": "appliance version",
}


def _differences(record: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """How a build record differs from the one this host expects, in words, most telling first."""
    found: list[str] = []
    key, want = record.get("key") or {}, expected["key"]
    if not isinstance(key, dict):
        return ["its record has no key"]
    if (key.get("gpu_name"), key.get("compute_capability")) != (want["gpu_name"], want["compute_capability"]):
        found.append(f"built for {key.get('gpu_name')} sm_{str(key.get('compute_capability')).replace('.', '')}")
    if record.get("tensorrt") != expected["tensorrt"]:
        found.append(f"built with {record.get('tensorrt')} (this host has {expected['tensorrt']})")
    if key.get("onnx_sha256") != want["onnx_sha256"]:
        found.append(f"built from another ONNX file (sha256 {str(key.get('onnx_sha256'))[:12]}…)")
    for field, words in _KEY_WORDS.items():
        if field != "onnx_sha256" and key.get(field) != want[field]:
            found.append(f"{words} {key.get(field)!r}, not {want[field]!r}")
    if record.get("model") != expected["model"]:
        found.append(f"model {record.get('model')!r}")
    return found


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

    def timing_cache_for(self, engine: PlannedEngine) -> Path:
        """The timing cache of this GPU model and TensorRT version: its builds reuse each other's kernel timings."""
        label = "".join(c if c.isalnum() or c == "." else "-" for c in self.tensorrt)
        return self.directory / "timing" / f"{engine.gpu.slug}.{label}.cache"

    def _expected_record(self, engine: PlannedEngine) -> dict[str, Any]:
        return {
            "key": json.loads(json.dumps(dataclasses.asdict(engine.key))),
            "tensorrt": self.tensorrt,
            "model": engine.model,
        }

    def refusal(self, engine: PlannedEngine) -> str | None:
        """Why the cached engine must not be used (missing, another key, corrupt), or None when it may."""
        path = self.path_for(engine)
        try:
            self._check(engine, path.read_bytes() if path.is_file() else None)
        except EngineRefused as exc:
            return str(exc)
        return None

    def verified_bytes(self, engine: PlannedEngine) -> bytes:
        """The engine's bytes, read once and checked against its record; raises EngineRefused with the reason.

        The bytes returned are the bytes hashed: a file replaced between the check and the load cannot slip in.
        """
        path = self.path_for(engine)
        data = path.read_bytes() if path.is_file() else None
        self._check(engine, data)
        assert data is not None  # _check refuses a missing file
        return data

    def _check(self, engine: PlannedEngine, data: bytes | None) -> None:
        path = self.path_for(engine)
        record_path = path.with_suffix(".json")
        if data is None or not record_path.is_file():
            raise EngineRefused("not built")
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            raise EngineRefused("its build record is not JSON") from None
        expected = self._expected_record(engine)
        for field in ("key", "tensorrt", "model"):
            if record.get(field) != expected[field]:
                detail = "; ".join(_differences(record, expected)) or repr(record.get(field))
                raise EngineRefused(f"its record's {field} does not match ({detail})")
        if hashlib.sha256(data).hexdigest() != record.get("engine_sha256"):
            raise EngineRefused("its bytes do not match the sha256 in its record (corrupt)")

    def explain_missing(self, engine: PlannedEngine) -> str:
        """Why no engine of this key is cached, from the records of the same model that are: "built for
        NVIDIA GeForce RTX 4090 sm_89", "built with tensorrt-rtx 1.6", "built from another ONNX file"."""
        expected = self._expected_record(engine)
        seen = []
        for _, record in self.records():
            if record.get("model") == engine.model:
                seen.append("; ".join(_differences(record, expected)) or "same key, but under another file name")
        if not seen:
            return f"no {engine.model} engine in {self.directory}"
        return f"the cached {engine.model} engine(s): " + " | ".join(dict.fromkeys(seen))

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
        """Make the engine present and valid; never leaves a partial engine or a record without its engine.

        A write that fails (a full disk) is a failed build with the reason, and removes what it wrote.
        """
        path = self.path_for(engine)
        started = time.perf_counter()
        with self._lock(engine):
            if self.refusal(engine) is None:
                return BuildResult(engine, "present", path, 0.0)
            try:
                return self._build_locked(engine, onnx_path, path, started)
            except OSError as exc:
                for written in (path, path.with_suffix(".json")):  # an engine without its record, or the reverse
                    written.unlink(missing_ok=True)
                reason = f"could not write into {self.directory}: {exc.strerror or exc}"
                return BuildResult(engine, "failed", path, time.perf_counter() - started, reason)

    def _build_locked(self, engine: PlannedEngine, onnx_path: Path, path: Path, started: float) -> BuildResult:
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
                "hardware_compatibility": engine.key.hardware_compatibility,
                "profiles": [dataclasses.asdict(p) for p in engine.key.profiles],
                "timing_cache": str(self.timing_cache_for(engine)),
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
