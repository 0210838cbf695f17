"""Prices in go-livepeer's terms, computed with exact rationals (no floats anywhere).

go-livepeer charges ``price_per_unit / pixels_per_unit`` per unit of work, and the unit depends on the pipeline
(LIVEPEER.md §4). A price the operator states per frame, request or second becomes ``price_per_unit = P`` and
``pixels_per_unit`` = the units in that frame, request or second, so ``price_per_unit`` stays the operator's
own decimal and every division is left to go-livepeer's exact arithmetic. Capabilities reached through BYOC
are billed per second of compute as ``price_per_unit / price_scaling``, two integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from appliance.livepeer.settings import PricingRule, exact

__all__ = [
    "GO_LIVEPEER_PIPELINES",
    "LIVE_UNITS_PER_SECOND",
    "ByocPrice",
    "ContractPrice",
    "PriceError",
    "byoc_price",
    "contract_price",
    "decimal_text",
]

# go-livepeer panics at start-up on a pipeline outside this list.
GO_LIVEPEER_PIPELINES = frozenset(
    {
        "text-to-image",
        "image-to-image",
        "image-to-video",
        "upscale",
        "audio-to-text",
        "segment-anything-2",
        "llm",
        "image-to-text",
        "text-to-speech",
        "live-video-to-video",
    }
)
LIVE_UNITS_PER_SECOND = 1280 * 720 * 30
_PIXEL_PIPELINES = frozenset({"text-to-image", "image-to-image", "upscale", "segment-anything-2", "image-to-text"})
_WEI_PER_ETH = 10**18


class PriceError(ValueError):
    """A price that go-livepeer cannot bill as stated; the message says why and what to write instead."""


@dataclass(frozen=True)
class ContractPrice:
    """An aiModels.json price: ``price_per_unit`` (exact) per ``pixels_per_unit`` units, in ``currency``."""

    price_per_unit: Fraction
    pixels_per_unit: int
    currency: str  # "USD" or "wei"

    @property
    def wei_per_unit_in_discovery(self) -> int | None:
        """What discovery advertises (floored to whole wei); None for fiat, converted at run time."""
        if self.currency != "wei":
            return None
        return int(self.price_per_unit // self.pixels_per_unit)


@dataclass(frozen=True)
class ByocPrice:
    """A BYOC registration's price: ``price_per_unit / price_scaling`` per second of compute."""

    price_per_unit: int
    price_scaling: int
    currency: str


def _in_currency(amount: str, currency: str) -> tuple[Fraction, str]:
    value = exact(amount)
    if currency == "ETH":  # converted here, exactly, so go-livepeer only ever sees wei or a fiat code
        return value * _WEI_PER_ETH, "wei"
    return value, currency


# (pipeline, unit) → (pixel factor, fixed units): one such unit is factor × width × height + fixed billing units.
_UNITS: dict[tuple[str, str], tuple[int, int]] = {
    **{(p, u): (1, 0) for p in _PIXEL_PIPELINES for u in ("frame", "request")},
    ("image-to-video", "request"): (25, 0),  # billed as 25 frames of the output size
    ("image-to-video", "frame"): (1, 0),
    ("live-video-to-video", "frame"): (1, 0),
    ("live-video-to-video", "second"): (0, LIVE_UNITS_PER_SECOND),
    ("audio-to-text", "second"): (0, 1000),  # billed per millisecond of audio
    ("llm", "token"): (0, 1),  # billed per max_tokens
    ("text-to-speech", "character"): (0, 1000),  # billed as 1000 units per character
}


def _units(pipeline: str, rule: PricingRule) -> int:
    """How many of the pipeline's billing units one ``rule.unit`` is."""
    try:
        factor, fixed = _UNITS[(pipeline, rule.unit)]
    except KeyError:
        raise PriceError(
            f"{pipeline!r} is not billed per {rule.unit}; go-livepeer bills it in its own units "
            "(LIVEPEER.md §4): choose the unit it allows"
        ) from None
    return factor * (rule.width or 0) * (rule.height or 0) + fixed


def contract_price(pipeline: str, rule: PricingRule, amount: str | None = None) -> ContractPrice:
    """The aiModels.json price of ``rule`` (or of ``amount`` in its unit, for a per-gateway price)."""
    if pipeline not in GO_LIVEPEER_PIPELINES:
        raise PriceError(f"{pipeline!r} is not one of go-livepeer's pipelines; it would panic at start-up")
    value, currency = _in_currency(amount or rule.price, rule.currency)
    return ContractPrice(price_per_unit=value, pixels_per_unit=_units(pipeline, rule), currency=currency)


def byoc_price(rule: PricingRule, amount: str | None = None, *, surging: bool = False) -> ByocPrice:
    """The BYOC price of ``rule`` (or of ``amount``), times its surge multiplier when ``surging``."""
    if rule.unit != "second":
        raise PriceError(
            f"{rule.capability!r} is reached through BYOC, which bills per second of compute: "
            f'state its price with unit = "second", not {rule.unit!r}'
        )
    value, currency = _in_currency(amount or rule.price, rule.currency)
    if surging and rule.surge is not None:
        value *= exact(rule.surge.multiplier)
    return ByocPrice(price_per_unit=value.numerator, price_scaling=value.denominator, currency=currency)


def decimal_text(value: Fraction) -> str:
    """An exact decimal literal (a JSON number go-livepeer's big.Rat parses), never in exponent form."""
    scaled, digits = value, 0
    while scaled.denominator != 1:
        if digits == 60:  # prices come from decimals, so this only trips on a bug
            raise PriceError(f"{value} has no finite decimal form")
        scaled, digits = scaled * 10, digits + 1
    sign, text = ("-" if scaled < 0 else ""), str(abs(scaled.numerator)).rjust(digits + 1, "0")
    return sign + (f"{text[:-digits]}.{text[-digits:]}" if digits else text)
