"""``lpa doctor``: what works on this host, and what is missing. Exit status 1 when something blocks serving."""

from __future__ import annotations

import base64
import platform

import numpy as np
import onnxruntime as ort

from appliance import __version__
from appliance.backends import EngineRequest, host_facts, predict_backend
from appliance.catalog import Catalog
from appliance.config import Node
from appliance.engines.cache import tensorrt_label
from appliance.gpu import probe_gpus
from appliance.modelstore import ModelFileError, ModelStore

__all__ = ["doctor_command", "working_providers"]


# A one-node ONNX graph, Identity on float32[1,4] (input "x", output "y", opset 13), serialised once with
# onnx.helper so that doctor needs no onnx package at run time.
IDENTITY_ONNX = base64.b64decode(
    "CAgSA2xwYTpEChAKAXgSAXkiCElkZW50aXR5EgZkb2N0b3JaEwoBeBIOCgwIARIICgIIAQoCCARiEwoBeRIOCgwIARIICgIIAQoCCARCBAoAEA0="
)


def working_providers() -> dict[str, str]:
    """Each listed execution provider → "works" or why not, judged by a real session, not by the list."""
    results: dict[str, str] = {}
    listed = ort.get_available_providers()
    for provider in listed:
        try:
            fallback = [] if provider == "CPUExecutionProvider" else ["CPUExecutionProvider"]
            session = ort.InferenceSession(IDENTITY_ONNX, providers=[provider, *fallback])
            session.run(None, {"x": np.zeros((1, 4), dtype=np.float32)})
            used = session.get_providers()[0]
            results[provider] = "works" if used == provider else f"listed, but fell back to {used}"
        except Exception as exc:  # any provider failure is a finding, not a crash
            results[provider] = f"fails: {str(exc).splitlines()[0][:120]}"
    return results


def doctor_command(node: Node, catalog: Catalog) -> int:
    problems = 0
    print(f"appliance     {__version__}")
    print(f"python        {platform.python_version()} ({platform.machine()})")
    print(f"onnxruntime   {ort.__version__}")
    verdicts = working_providers()
    for provider, verdict in verdicts.items():
        print(f"  provider    {provider:28} {verdict}")
    probe = probe_gpus()
    if probe.gpus:
        print(f"gpus          driver {probe.driver_version}, CUDA driver API {probe.cuda_driver_version}")
        for gpu in probe.gpus:
            print(
                f"  gpu {gpu.index}       {gpu.name} sm_{gpu.major}{gpu.minor} "
                f"{gpu.memory_total // 2**20} MiB {gpu.uuid}"
            )
    else:
        print(f"gpus          none ({probe.problem}); models run on the CPU")
    host = host_facts(allow_gpu=True, probe=probe)
    if host.gpu is not None:
        print(f"  this worker {host.gpu.name} (GPU {host.gpu.index}, CUDA device {host.cuda_index})")
    elif probe.gpus:
        print(f"  this worker no GPU: {host.no_gpu}")
    engines = f"{tensorrt_label(host.flavour)}" if host.flavour else "not installed (no TensorRT engines)"
    print(f"tensorrt      {engines}; engine cache {node.engines.cache_dir}")
    store = ModelStore(node.worker.model_path)
    for served in dict.fromkeys(m.model for m in node.models):
        manifest = catalog.get(served)
        try:
            path = store.verified_path(manifest)
            verdict = "ok (sha256 verified)"
        except ModelFileError as exc:
            path, verdict, problems = store.path_for(manifest), f"MISSING: {exc}", problems + 1
        print(f"model         {served:28} {verdict}")
        # The rung `lpa serve` would take for this model, and why not the faster ones: nothing is loaded or built.
        sha256 = store.expected_sha256(manifest)
        request = EngineRequest(served, manifest, sha256, node.engines) if sha256 else None
        prediction = predict_backend(path, host=host, engine=request, provider_verdicts=verdicts)
        print(f"  backend     {prediction.backend:28} {prediction.reason}")
    print("result        " + ("ready to serve" if not problems else f"{problems} problem(s) above"))
    return 1 if problems else 0
