"""Fingerprints of what each service reads, so provisioning restarts a service only when its inputs changed.

A node file edit that changes only go-livepeer's side (an upscale price, a flag) must restart the orchestrator and
leave the workers serving; an edit to a model or to a BYOC price must restart the workers. Each fingerprint is a
sha256 over exactly the inputs that service reads at start-up; secrets enter only as their own sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import msgspec

from appliance.config import Node
from appliance.livepeer.render import PIPELINE_OF, render
from appliance.secrets import read_secret_file

__all__ = ["Service", "fingerprint"]

Service = Literal["worker", "orchestrator"]


def _secret_digest(path: str | None, what: str) -> str | None:
    secret = read_secret_file(path, what=what)
    return hashlib.sha256(secret.encode()).hexdigest() if secret is not None else None


def _worker_inputs(node: Node) -> dict[str, Any]:
    """Everything ``lpa serve`` reads: its own sections, the BYOC prices it registers, and its token."""
    settings = node.orchestrator
    return {
        "worker": node.worker,
        "models": node.models,
        "engines": node.engines,
        # The worker registers capabilities outside go-livepeer's list itself, with their prices and surge.
        "byoc_pricing": [rule for rule in node.pricing if rule.capability not in PIPELINE_OF],
        "byoc": {
            "url": settings.byoc_url,
            "verify_tls": settings.byoc_verify_tls,
            "interval_seconds": settings.byoc_interval_seconds,
            "worker_url": settings.worker_url,
            "network": settings.network,
            "orch_secret": _secret_digest(settings.orch_secret_file, "orchestrator.orch_secret_file")
            if settings.byoc_url
            else None,
        },
        "token": _secret_digest(node.worker.token_file, "worker.token_file"),
    }


def _orchestrator_inputs(node: Node, source: str) -> dict[str, Any]:
    """Everything go-livepeer reads: the rendered files, and the secret files they name."""
    settings = node.orchestrator
    rendered = render(node, out_dir=Path(settings.config_dir).expanduser(), source=source)
    return {
        "files": {f.name: hashlib.sha256(f.content).hexdigest() for f in rendered.files},
        "orch_secret": _secret_digest(settings.orch_secret_file, "orchestrator.orch_secret_file"),
        "eth_password": _secret_digest(settings.eth_password_file, "orchestrator.eth_password_file"),
    }


def fingerprint(node: Node, service: Service, *, source: str) -> str:
    """The sha256 (hex) of ``service``'s inputs; ``source`` is the node file's path as ``lpa render`` names it.

    Raises ConfigError when a secret file cannot be read, RenderError when the node file cannot be rendered.
    """
    inputs = _worker_inputs(node) if service == "worker" else _orchestrator_inputs(node, source)
    return hashlib.sha256(msgspec.json.encode(inputs, order="sorted")).hexdigest()
