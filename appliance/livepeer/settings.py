"""The node file's ``[orchestrator]`` and ``[[pricing]]`` sections.

Prices are decimal strings (``"0.005"``), never TOML floats: a float cannot hold 0.1 exactly, and go-livepeer
bills with exact rationals.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Literal

import msgspec

from appliance.catalog import Capability
from appliance.strict import StrictStruct

__all__ = ["DecimalText", "Network", "OrchestratorSettings", "PriceUnit", "PricingRule", "SurgeRule", "exact"]

DecimalText = Annotated[str, msgspec.Meta(pattern=r"^(0|[1-9][0-9]*)(\.[0-9]+)?$", max_length=40)]
EthAddress = Annotated[str, msgspec.Meta(pattern=r"^0x[0-9a-fA-F]{40}$")]
Network = Literal["offchain", "arbitrum-one-mainnet"]
PriceUnit = Literal["request", "frame", "second", "token", "character"]
# go-livepeer flag names are camelCase words; values are single tokens on a `name value` config line.
FlagName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9]*$")]
FlagValue = Annotated[str, msgspec.Meta(pattern=r"^[^\s#]*$")]


def exact(text: str) -> Fraction:
    """A decimal string as an exact rational."""
    return Fraction(Decimal(text))


class SurgeRule(StrictStruct, frozen=True, kw_only=True):
    """Above ``threshold`` (busy slots / capacity), the price is multiplied by ``multiplier``."""

    threshold: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
    multiplier: DecimalText

    def __post_init__(self) -> None:
        if exact(self.multiplier) < 1:
            raise ValueError("a surge multiplier below 1 is a discount; use a lower base price instead")


class PricingRule(StrictStruct, frozen=True, kw_only=True):
    """A price for a capability, or for one of its models (a model's rule wins over its capability's).

    ``unit``: ``frame`` (one image of ``width`` × ``height`` pixels), ``request`` (one request, for images of
    ``width`` × ``height``), ``second`` (of live video or audio, or of compute for capabilities reached through
    BYOC), ``token`` (llm) or ``character`` (text-to-speech).
    """

    capability: Capability
    model_id: str | None = None
    unit: PriceUnit
    price: DecimalText
    currency: Literal["USD", "ETH", "wei"]
    width: Annotated[int, msgspec.Meta(ge=1, le=16384)] | None = None
    height: Annotated[int, msgspec.Meta(ge=1, le=16384)] | None = None
    # Gateway address → price (same unit and currency): go-livepeer's per-gateway prices.
    gateways: dict[EthAddress, DecimalText] = msgspec.field(default_factory=dict)
    surge: SurgeRule | None = None

    def __post_init__(self) -> None:
        sized = self.width is not None and self.height is not None
        if self.unit in ("frame", "request") and not sized:
            raise ValueError(f"a price per {self.unit} needs the image size it is for: set width and height")
        if self.unit not in ("frame", "request") and (self.width is not None or self.height is not None):
            raise ValueError(f"a price per {self.unit} takes no width or height")


class OrchestratorSettings(StrictStruct, frozen=True, kw_only=True):
    """How go-livepeer runs on this node (rendered into its ``-config`` file).

    ``role``: ``orchestrator`` (go-livepeer takes jobs from gateways and sends them to this node's workers) or
    ``remote-worker`` (go-livepeer joins the orchestrator at ``orch_addr`` with the shared orchSecret and serves its
    AI jobs with this node's workers: the scale-out path).
    """

    role: Literal["orchestrator", "remote-worker"] = "orchestrator"
    orch_addr: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9.\[\]:-]+:[0-9]{1,5}$")] | None = None
    network: Network = "offchain"
    service_addr: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9.\[\]:-]+:[0-9]{1,5}$")] | None = None
    eth_url: Annotated[str, msgspec.Meta(pattern=r"^(https|wss?)://\S+$")] | None = None
    eth_acct_addr: EthAddress | None = None
    eth_password_file: str | None = None
    orch_secret_file: str | None = None
    nvidia: Annotated[str, msgspec.Meta(pattern=r"^(all|[0-9]+(,[0-9]+)*)$")] | None = None
    monitor: bool = True
    # Where go-livepeer reaches the worker; unset: http:// + the worker's listen address (loopback).
    worker_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^/\s]+$")] | None = None
    # Named in -aiRunnerImageOverrides so go-livepeer never pulls a multi-GB runner image for external entries;
    # provisioning makes this (empty) image exist locally.
    runner_image: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._/:-]*$")] = "livepeer-appliance/external:1"
    config_dir: str = "/etc/livepeer-appliance"
    # Where the worker registers BYOC capabilities (the orchestrator's service address; go-livepeer serves it
    # over TLS with a self-signed certificate, hence no verification by default). Unset: no registration.
    byoc_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^/\s]+$")] | None = None
    byoc_verify_tls: bool = False
    # Re-register this often: an orchestrator drops a capability on a connection error and forgets it on restart.
    byoc_interval_seconds: Annotated[float, msgspec.Meta(ge=0.2, le=3600)] = 30.0
    extra_flags: dict[FlagName, FlagValue] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role == "remote-worker":
            if self.orch_addr is None or self.orch_secret_file is None:
                raise ValueError("role 'remote-worker' needs orch_addr and orch_secret_file (the orchestrator's)")
            owned = [n for n in ("service_addr", "eth_url", "eth_acct_addr", "eth_password_file") if getattr(self, n)]
            if owned:
                raise ValueError(f"{', '.join(owned)}: the orchestrator's settings, not a remote worker's")
            return
        if self.orch_addr is not None:
            raise ValueError("orch_addr is for role 'remote-worker'")
        if self.byoc_url is not None and self.orch_secret_file is None:
            raise ValueError("byoc_url needs orch_secret_file: registrations are authenticated with the orchSecret")
        if self.network != "offchain":
            missing = [
                name
                for name in ("service_addr", "eth_url", "eth_acct_addr", "eth_password_file")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"network {self.network!r} needs {', '.join(missing)}")
