"""Building one engine, in a process of its own: ``python -m appliance.engines.builder SPEC.json``.

A fresh process per engine because TensorRT-RTX numbers internal tensors with a process-wide counter: two
builds in one process give different bytes. The parent (engines/cache.py) owns locking, hashing, records and
the atomic rename; this module only turns an ONNX file into engine bytes at a temporary path.

Flavours: TensorRT-RTX (``tensorrt_rtx``, strongly typed: fp16 means converting the ONNX to fp16 first, keeping
fp32 inputs and outputs; ahead-of-time targets by compute capability, no GPU needed) and TensorRT 10
(``tensorrt``, built on the GPU it runs on; fp16 is a builder flag). TensorRT 10 is the path a GPU node takes
and has not run on this project's CI machines, which have no GPU; it loads and saves one timing cache per GPU model
and TensorRT version (``EngineCache.timing_cache_for``) and honours the node file's hardware compatibility level.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["available_flavour", "main"]

_RTX_TARGETS = {(7, 5): "SM75", (8, 0): "SM80", (8, 6): "SM86", (8, 9): "SM89", (12, 0): "SM120"}


def available_flavour() -> str | None:
    """``tensorrt`` (a GPU node) or ``tensorrt-rtx`` (CI), by what is installed; None when neither is."""
    if importlib.util.find_spec("tensorrt") is not None:
        return "tensorrt"
    if importlib.util.find_spec("tensorrt_rtx") is not None:
        return "tensorrt-rtx"
    return None


def _fp16_onnx(onnx_path: str, workdir: str) -> str:
    import onnx  # noqa: PLC0415
    from onnxruntime.transformers.float16 import convert_float_to_float16  # noqa: PLC0415

    converted = convert_float_to_float16(onnx.load(onnx_path), keep_io_types=True)
    path = str(Path(workdir) / "fp16.onnx")
    onnx.save(converted, path)
    return path


# The node file's hardware_compatibility → TensorRT's HardwareCompatibilityLevel member.
_COMPATIBILITY_LEVELS = {
    "none": "NONE",
    "same-compute-capability": "SAME_COMPUTE_CAPABILITY",
    "ampere-plus": "AMPERE_PLUS",
}


def _save_timing_cache_atomically(written: Path, final: Path) -> None:
    """Move the cache a build saved into place; last writer wins (a timing cache is only ever a speed-up)."""
    if written.is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        written.replace(final)


def _build(spec: dict[str, Any]) -> bytes:
    flavour = spec["flavour"]
    if flavour == "tensorrt-rtx":
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"  # must precede the first polygraphy import
    from polygraphy.backend.trt import EngineBytesFromNetwork, NetworkFromOnnxPath, Profile  # noqa: PLC0415

    profile = Profile()
    for p in spec["profiles"]:
        profile.add(p["input"], min=tuple(p["min"]), opt=tuple(p["opt"]), max=tuple(p["max"]))
    with tempfile.TemporaryDirectory() as workdir:
        onnx_path = spec["onnx"]
        if flavour == "tensorrt-rtx":
            from polygraphy.backend.tensorrt_rtx import CreateConfigRTX  # noqa: PLC0415

            target = (spec["major"], spec["minor"])
            if target not in _RTX_TARGETS:
                raise ValueError(
                    f"TensorRT-RTX cannot target sm_{target[0]}{target[1]} "
                    f"(it targets {', '.join(_RTX_TARGETS.values())})"
                )
            if spec["precision"] == "fp16":
                onnx_path = _fp16_onnx(onnx_path, workdir)
            network = NetworkFromOnnxPath(onnx_path, strongly_typed=True)
            config = CreateConfigRTX(
                profiles=[profile],
                compute_capabilities=[target],
                builder_optimization_level=spec["optimization_level"],
            )
        else:
            from polygraphy.backend.trt import CreateConfig  # noqa: PLC0415

            tensorrt = importlib.import_module("tensorrt")  # by name: CPU installs have no stubs for it

            timing_cache = Path(spec["timing_cache"])
            network = NetworkFromOnnxPath(onnx_path)
            config = CreateConfig(
                fp16=spec["precision"] == "fp16",
                profiles=[profile],
                builder_optimization_level=spec["optimization_level"],
                hardware_compatibility_level=getattr(
                    tensorrt.HardwareCompatibilityLevel, _COMPATIBILITY_LEVELS[spec["hardware_compatibility"]]
                ),
                load_timing_cache=str(timing_cache) if timing_cache.is_file() else None,
            )
            written = Path(workdir) / "timing.cache"
            engine = bytes(EngineBytesFromNetwork(network, config=config, save_timing_cache=str(written))())
            _save_timing_cache_atomically(written, timing_cache)
            return engine
        # TensorRT-RTX builds ahead of time for the compute capabilities named, with no GPU and so no kernel
        # timings to cache: its engines pick kernels when they first run (its runtime cache, not used yet).
        return bytes(EngineBytesFromNetwork(network, config=config)())


def main(argv: list[str] | None = None) -> int:
    """Read the build spec (JSON) named on the command line, write the engine bytes to its ``out`` path."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m appliance.engines.builder SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    try:
        engine = _build(spec)
        Path(spec["out"]).write_bytes(engine)  # a full disk is a failed build too, reported the same way
    except Exception as exc:  # a failed build is reported to the parent, which decides what to do
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"bytes": len(engine)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
