"""``lpa check-gateway URL``: what the network sees of this orchestrator, beside what the node file renders.

Reads a gateway's ``GET /getNetworkCapabilities`` (LIVEPEER.md §7), finds this orchestrator by its address or
service URI, and compares, per rendered entry: the model is advertised, with the same capacity and warmth, and
its price. Fiat prices are converted to wei by the orchestrator at run time, so only wei prices are compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import httpx

from appliance.config import Node
from appliance.livepeer.byoc import byoc_name
from appliance.livepeer.prices import byoc_price, contract_price
from appliance.livepeer.render import PIPELINE_OF

__all__ = ["CAPABILITY_IDS", "Finding", "GatewayError", "compare", "fetch_capabilities", "find_orchestrator"]

CAPABILITY_IDS = {
    "text-to-image": 27,
    "image-to-image": 28,
    "image-to-video": 29,
    "upscale": 30,
    "audio-to-text": 31,
    "segment-anything-2": 32,
    "llm": 33,
    "image-to-text": 34,
    "live-video-to-video": 35,
    "text-to-speech": 36,
}
BYOC_ID = 37


class GatewayError(Exception):
    """The gateway could not be asked, or this orchestrator is not among those it knows."""


@dataclass(frozen=True)
class Finding:
    capability: str
    model: str
    field: str
    rendered: str
    network: str
    compared: bool = True  # False: shown only (a fiat price, converted by the orchestrator at run time)

    @property
    def ok(self) -> bool:
        return not self.compared or self.rendered == self.network


def fetch_capabilities(url: str, *, timeout: float = 10.0) -> dict[str, Any]:
    try:
        response = httpx.get(f"{url.rstrip('/')}/getNetworkCapabilities", timeout=timeout)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise GatewayError(f"{url}: {exc}") from exc
    return body


def find_orchestrator(capabilities: dict[str, Any], *, address: str | None, service_uri: str | None) -> dict[str, Any]:
    for orchestrator in capabilities.get("orchestrators") or []:
        if address and str(orchestrator.get("address", "")).lower() == address.lower():
            return dict(orchestrator)
        if service_uri and str(orchestrator.get("orch_uri", "")).rstrip("/") == service_uri.rstrip("/"):
            return dict(orchestrator)
    known = len(capabilities.get("orchestrators") or [])
    raise GatewayError(f"the gateway knows {known} orchestrators, none with address {address} or URI {service_uri}")


def _advertised_price(orchestrator: dict[str, Any], capability_id: int, constraint: str) -> Fraction | None:
    for price in orchestrator.get("capabilities_prices") or []:
        if price.get("capability") == capability_id and price.get("constraint") == constraint:
            return Fraction(int(price.get("pricePerUnit", 0)), int(price.get("pixelsPerUnit", 1)) or 1)
    return None


def _model_constraint(orchestrator: dict[str, Any], capability_id: int, model: str) -> dict[str, Any] | None:
    per_capability = (orchestrator.get("capabilities") or {}).get("constraints", {}).get("PerCapability", {})
    models = (per_capability.get(str(capability_id)) or {}).get("models") or {}
    found = models.get(model)
    return dict(found) if isinstance(found, dict) else None


def _wei(value: Fraction | None) -> str:
    return (
        "absent"
        if value is None
        else f"{value.numerator}/{value.denominator} wei"
        if value.denominator != 1
        else f"{value.numerator} wei"
    )


def compare(node: Node, orchestrator: dict[str, Any]) -> list[Finding]:
    """One finding per thing the network should see; ``ok`` tells whether it sees it as rendered."""
    findings = []
    for entry in node.models:
        rule = node.price_for(entry)
        if entry.capability in PIPELINE_OF:
            pipeline = PIPELINE_OF[entry.capability]
            capability_id, constraint = CAPABILITY_IDS[pipeline], entry.served_id
            seen = _model_constraint(orchestrator, capability_id, entry.served_id)
            findings += [
                Finding(pipeline, entry.served_id, "advertised", "yes", "yes" if seen else "no"),
                Finding(
                    pipeline,
                    entry.served_id,
                    "capacity",
                    str(entry.capacity),
                    str(seen.get("capacity")) if seen else "absent",
                ),
                Finding(
                    pipeline,
                    entry.served_id,
                    "warm",
                    str(entry.warm).lower(),
                    str(seen.get("warm")).lower() if seen else "absent",
                ),
            ]
            price = contract_price(pipeline, rule) if rule else None
            wei = price.wei_per_unit_in_discovery if price else None
            expected = Fraction(wei) if wei is not None else None
            label = pipeline
        else:
            capability_id, constraint, label = BYOC_ID, byoc_name(node, entry), "byoc"
            price_byoc = byoc_price(rule) if rule else None
            expected = (
                Fraction(price_byoc.price_per_unit, price_byoc.price_scaling)
                if price_byoc and price_byoc.currency == "wei"
                else None
            )
            advertised_byoc = _advertised_price(orchestrator, capability_id, constraint) is not None
            findings.append(Finding(label, constraint, "advertised", "yes", "yes" if advertised_byoc else "no"))
        advertised = _advertised_price(orchestrator, capability_id, constraint)
        if expected is not None:
            findings.append(Finding(label, constraint, "price", _wei(expected), _wei(advertised)))
        else:
            shown = f"({rule.currency if rule else 'none'}, run time)"
            findings.append(Finding(label, constraint, "price", shown, _wei(advertised), compared=False))
    return findings
