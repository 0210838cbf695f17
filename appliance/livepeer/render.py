"""``lpa render``: go-livepeer's files from the node file, exactly as go-livepeer reads them.

- ``aiModels.json``: a top-level array; prices as raw JSON numbers (go-livepeer parses them with big.Rat from
  the token itself, so a quoted price would stop it at start-up); one entry per served model of a go-livepeer
  pipeline, plus one per per-gateway price. 0600: it carries the worker's token.
- ``livepeer.conf``: go-livepeer's ``-config`` file, plain ``name value`` lines.
- ``livepeer.env``: the environment file of the orchestrator's unit.
- ``byoc.json``: the BYOC registrations for capabilities outside go-livepeer's list. 0600: it carries the token.

What go-livepeer would panic on is refused here, with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import Node, ServedModel
from appliance.instances import worker_instances
from appliance.livepeer.byoc import registration
from appliance.livepeer.prices import GO_LIVEPEER_PIPELINES, PriceError, contract_price, decimal_text
from appliance.runtime import entry_base_path
from appliance.secrets import read_secret_file

__all__ = ["PIPELINE_OF", "RenderError", "Rendered", "RenderedFile", "render"]

# The worker's capabilities that are go-livepeer pipelines; every other capability is registered through BYOC.
PIPELINE_OF = {"upscale": "upscale"}


class RenderError(ValueError):
    """The node file describes something go-livepeer would refuse or panic on; nothing is written."""


@dataclass(frozen=True)
class RenderedFile:
    name: str
    content: bytes
    mode: int
    secrets: tuple[str, ...] = ()  # values to mask when showing a diff


@dataclass(frozen=True)
class Rendered:
    files: list[RenderedFile]
    warnings: list[str] = field(default_factory=list)


class _Number:
    """A JSON number written verbatim (an exact decimal), never through float."""

    def __init__(self, text: str) -> None:
        self.text = text


def _json_value(value: Any) -> str:
    return value.text if isinstance(value, _Number) else json.dumps(value)


def _json_array(entries: list[dict[str, Any]]) -> bytes:
    """A pretty JSON array of flat objects, with exact numbers kept as written."""
    lines = [
        "  {" + ", ".join(f"{json.dumps(k)}: {_json_value(v)}" for k, v in entry.items()) + "}" for entry in entries
    ]
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode()


def _refuse_zero_on_chain(node: Node, entry: ServedModel, price: Any) -> None:
    if node.orchestrator.network != "offchain" and (price is None or price == 0):
        raise RenderError(
            f"{entry.capability} model {entry.served_id!r} has no price (or a zero price) on "
            f"{node.orchestrator.network}: go-livepeer panics at start-up with both prices zero; add a "
            "[[pricing]] rule for it"
        )


def _contract_entries(
    node: Node, entry: ServedModel, base: dict[str, Any], warnings: list[str]
) -> Iterator[dict[str, Any]]:
    pipeline = PIPELINE_OF[entry.capability]
    rule = node.price_for(entry)
    if rule is None:
        _refuse_zero_on_chain(node, entry, None)
        yield base
        return
    for gateway, amount in [(None, rule.price), *sorted(rule.gateways.items())]:
        priced = contract_price(pipeline, rule, amount)
        if gateway is None:  # a per-gateway price may be zero (a node's own gateway); the default may not
            _refuse_zero_on_chain(node, entry, priced.price_per_unit)
        if priced.price_per_unit > 0 and priced.wei_per_unit_in_discovery == 0:
            warnings.append(
                f"{pipeline} {entry.served_id!r}{' for gateway ' + gateway if gateway else ''}: "
                f"{decimal_text(priced.price_per_unit)} wei per {priced.pixels_per_unit} units floors to 0 wei "
                "per unit in discovery (tickets still use the exact price)"
            )
        yield {
            **base,
            **({"gateway": gateway} if gateway else {}),
            "price_per_unit": _Number(decimal_text(priced.price_per_unit)),
            "pixels_per_unit": _Number(str(priced.pixels_per_unit)),
            "currency": priced.currency,
        }


def _byoc_entry(node: Node, entry: ServedModel, base_url: str, token: str | None) -> dict[str, Any]:
    body = registration(node, entry, base_url, token)
    if body["price_per_unit"] == 0:
        _refuse_zero_on_chain(node, entry, None)
    return body


def _check_ai_models(entries: list[dict[str, Any]]) -> None:
    """Refuse what go-livepeer panics on at start-up, whatever produced the entries."""
    warmth: dict[str, bool] = {}
    for entry in entries:
        if entry["pipeline"] not in GO_LIVEPEER_PIPELINES:
            raise RenderError(f"pipeline {entry['pipeline']!r} is not one of go-livepeer's; it would panic")
        if warmth.setdefault(entry["model_id"], entry["warm"]) != entry["warm"]:
            raise RenderError(f"model_id {entry['model_id']!r} is both warm and cold; go-livepeer would panic")


def _config_lines(node: Node, ai_models_path: Path) -> list[str]:
    settings = node.orchestrator
    managed: dict[str, str | None] = {  # flag → value (None: a bare flag, meaning true)
        "network": settings.network,
        **({"orchestrator": None} if settings.role == "orchestrator" else {"orchAddr": settings.orch_addr}),
        "aiWorker": None,
        "aiModels": str(ai_models_path),
        "aiRunnerImageOverrides": json.dumps({"default": settings.runner_image}, separators=(",", ":")),
    }
    optional = {
        "serviceAddr": settings.service_addr,
        "ethUrl": settings.eth_url,
        "ethAcctAddr": settings.eth_acct_addr,
        "ethPassword": settings.eth_password_file,  # go-livepeer accepts a file path for both secrets
        "orchSecret": settings.orch_secret_file,
        "nvidia": settings.nvidia,
    }
    managed.update({name: value for name, value in optional.items() if value is not None})
    if settings.monitor:
        managed["monitor"] = None
    clash = sorted(set(settings.extra_flags) & set(managed))
    if clash:
        raise RenderError(
            f"orchestrator.extra_flags sets {', '.join(clash)}, which the node file manages; "
            "use the matching orchestrator setting instead"
        )
    managed.update(settings.extra_flags)
    return [name if value is None or value == "" else f"{name} {value}" for name, value in managed.items()]


def render(node: Node, *, out_dir: Path, source: str) -> Rendered:
    """Everything go-livepeer needs, in memory; raises RenderError (or PriceError) on what it would refuse."""
    token = read_secret_file(node.worker.token_file, what="worker.token_file")
    warnings: list[str] = []
    ai_models: list[dict[str, Any]] = []
    byoc: list[dict[str, Any]] = []
    try:
        for instance in worker_instances(node):  # one entry per instance: go-livepeer spreads requests over them
            for entry in node.models:
                if entry.capability in PIPELINE_OF:
                    base = {
                        "pipeline": PIPELINE_OF[entry.capability],
                        "model_id": entry.served_id,
                        "url": instance.url + entry_base_path(entry),
                        **({"token": token} if token else {}),
                        "capacity": entry.capacity,
                        "warm": entry.warm,
                    }
                    ai_models.extend(_contract_entries(node, entry, base, warnings))
                else:
                    byoc.append(_byoc_entry(node, entry, instance.url, token))
    except PriceError as exc:
        raise RenderError(str(exc)) from exc
    _check_ai_models(ai_models)
    header = f"# Rendered by `lpa render` from {source}: edit the node file, not this file.\n"
    config = header + "\n".join(_config_lines(node, out_dir / "aiModels.json")) + "\n"
    env = header + f"LIVEPEER_CONFIG={out_dir / 'livepeer.conf'}\n"
    secrets = (token,) if token else ()
    return Rendered(
        files=[
            RenderedFile("aiModels.json", _json_array(ai_models), 0o600, secrets),
            RenderedFile("livepeer.conf", config.encode(), 0o644),
            RenderedFile("livepeer.env", env.encode(), 0o644),
            RenderedFile("byoc.json", (json.dumps(byoc, indent=2) + "\n").encode(), 0o600, secrets),
        ],
        warnings=warnings,
    )
