"""`lpa render`: exact prices in go-livepeer's units, the files it reads, and the refusals that spare a panic."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from appliance.config import load_node_text
from appliance.livepeer.prices import LIVE_UNITS_PER_SECOND, PriceError, byoc_price, contract_price
from appliance.livepeer.render import RenderError, _check_ai_models, render
from appliance.livepeer.settings import PricingRule
from appliance.strict import ConfigError
from tests.doubles.orchestrator import PIPELINES

# go-livepeer's AIModelConfig (core/ai.go) as the JSON it unmarshals: prices must be JSON numbers (big.Rat reads
# the raw token), pixels_per_unit a positive integer, url with a scheme.
AI_MODEL_CONFIG = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["pipeline", "model_id"],
        "properties": {
            "pipeline": {"enum": sorted(PIPELINES)},
            "model_id": {"type": "string", "minLength": 1},
            "url": {"type": "string", "pattern": "^https?://"},
            "token": {"type": "string"},
            "warm": {"type": "boolean"},
            "capacity": {"type": "integer", "minimum": 1},
            "optimization_flags": {"type": "object"},
            "gateway": {"type": "string"},
            "price_per_unit": {"type": "number", "minimum": 0},
            "pixels_per_unit": {"type": "integer", "minimum": 1},
            "currency": {"type": "string"},
        },
    },
}


def _rule(
    unit: str,
    price: str,
    currency: str = "wei",
    width: int | None = None,
    height: int | None = None,
    capability: str = "upscale",
) -> PricingRule:
    return PricingRule(
        capability=capability,
        unit=unit,
        price=price,
        currency=currency,  # type: ignore[arg-type]
        width=width,
        height=height,
    )


CONVERSIONS = [
    # (description, pipeline, rule, price_per_unit, pixels_per_unit, currency)
    (
        "text-to-image per 1024² frame",
        "text-to-image",
        _rule("frame", "0.004", "USD", 1024, 1024),
        "0.004",
        1024 * 1024,
        "USD",
    ),
    (
        "image-to-image per 512² request",
        "image-to-image",
        _rule("request", "3000000", "wei", 512, 512),
        "3000000",
        512 * 512,
        "wei",
    ),
    ("upscale per input frame", "upscale", _rule("frame", "0.0005", "USD", 640, 480), "0.0005", 640 * 480, "USD"),
    (
        "segment-anything-2 per frame",
        "segment-anything-2",
        _rule("frame", "12", "wei", 1024, 1024),
        "12",
        1024 * 1024,
        "wei",
    ),
    (
        "image-to-text per request",
        "image-to-text",
        _rule("request", "0.001", "USD", 384, 384),
        "0.001",
        384 * 384,
        "USD",
    ),
    (
        "image-to-video per request = 25 frames",
        "image-to-video",
        _rule("request", "0.05", "USD", 1024, 576),
        "0.05",
        1024 * 576 * 25,
        "USD",
    ),
    (
        "image-to-video per frame",
        "image-to-video",
        _rule("frame", "0.002", "USD", 1024, 576),
        "0.002",
        1024 * 576,
        "USD",
    ),
    (
        "live video per second",
        "live-video-to-video",
        _rule("second", "0.0001", "USD"),
        "0.0001",
        LIVE_UNITS_PER_SECOND,
        "USD",
    ),
    (
        "live video per 1280×720 frame",
        "live-video-to-video",
        _rule("frame", "5", "wei", 1280, 720),
        "5",
        1280 * 720,
        "wei",
    ),
    (
        "audio-to-text per second of audio (billed per ms)",
        "audio-to-text",
        _rule("second", "0.0002", "USD"),
        "0.0002",
        1000,
        "USD",
    ),
    ("llm per token", "llm", _rule("token", "0.000001", "USD"), "0.000001", 1, "USD"),
    ("text-to-speech per character", "text-to-speech", _rule("character", "300", "wei"), "300", 1000, "wei"),
    ("ETH is converted to wei exactly", "upscale", _rule("frame", "0.000000000000000001", "ETH", 1, 1), "1", 1, "wei"),
    (
        "ETH fractions stay exact",
        "upscale",
        _rule("frame", "0.1", "ETH", 512, 512),
        "100000000000000000",
        512 * 512,
        "wei",
    ),
]


@pytest.mark.parametrize(
    ("description", "pipeline", "rule", "ppu", "pixels", "currency"), CONVERSIONS, ids=[c[0] for c in CONVERSIONS]
)
def test_contract_price_conversion(
    description: str, pipeline: str, rule: PricingRule, ppu: str, pixels: int, currency: str
) -> None:
    price = contract_price(pipeline, rule)
    assert (price.price_per_unit, price.pixels_per_unit, price.currency) == (Decimal(ppu), pixels, currency)


@pytest.mark.parametrize(
    ("pipeline", "rule", "message"),
    [
        ("upscale", _rule("second", "1"), "not billed per second"),
        ("live-video-to-video", _rule("request", "1", width=8, height=8), "not billed per request"),
        ("llm", _rule("request", "1", width=8, height=8), "not billed per request"),
        ("audio-to-text", _rule("token", "1"), "not billed per token"),
        ("text-to-speech", _rule("frame", "1", width=8, height=8), "not billed per frame"),
        ("upscale", _rule("character", "1"), "not billed per character"),
        ("depth", _rule("frame", "1", width=8, height=8), "not one of go-livepeer's pipelines"),
    ],
)
def test_contract_price_refusals(pipeline: str, rule: PricingRule, message: str) -> None:
    with pytest.raises(PriceError, match=message):
        contract_price(pipeline, rule)


@pytest.mark.parametrize(
    ("price", "currency", "expected"),
    [
        ("0.002", "USD", (1, 500, "USD")),
        ("0.0015", "USD", (3, 2000, "USD")),
        ("7", "wei", (7, 1, "wei")),
        ("0.000001", "ETH", (10**12, 1, "wei")),
        ("0", "wei", (0, 1, "wei")),
    ],
)
def test_byoc_price_is_an_exact_integer_ratio(price: str, currency: str, expected: tuple[int, int, str]) -> None:
    result = byoc_price(_rule("second", price, currency, capability="depth"))
    assert (result.price_per_unit, result.price_scaling, result.currency) == expected


def test_byoc_refuses_per_frame_prices() -> None:
    with pytest.raises(PriceError, match="bills per second of compute"):
        byoc_price(_rule("frame", "1", width=4, height=4, capability="depth"))


def test_float_prices_are_refused_by_the_node_file() -> None:
    with pytest.raises(ConfigError, match=r"Expected `str`, got `float` - at `\$\.pricing\[0\]\.price`"):
        load_node_text(NODE.replace('price = "0.0005"', "price = 0.0005"), source="node.toml")


NODE = """
[worker]
listen = "0.0.0.0:8000"
token_file = "TOKEN_FILE"
[[models]]
model = "waifu2x-upconv7"
capability = "upscale"
capacity = 2
[[models]]
model = "waifu2x-cunet"
capability = "upscale"
warm = false
[[models]]
model = "ppocr-v4-det"
capability = "depth"
[orchestrator]
network = "offchain"
nvidia = "0,1"
extra_flags = { v = "6" }
[[pricing]]
capability = "upscale"
unit = "frame"
width = 512
height = 512
price = "0.0005"
currency = "USD"
gateways = { "0x00000000000000000000000000000000000000aa" = "0.0004" }
[[pricing]]
capability = "depth"
unit = "second"
price = "0.001"
currency = "USD"
"""


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("tok-123-secret\n")
    path.chmod(0o600)
    return path


def _node(token_file: Path, text: str = NODE) -> Any:
    return load_node_text(text.replace("TOKEN_FILE", str(token_file)), source="node.toml")


def test_rendered_ai_models_is_what_golivepeer_reads(token_file: Path, tmp_path: Path) -> None:
    rendered = render(_node(token_file), out_dir=tmp_path, source="node.toml")
    files = {f.name: f for f in rendered.files}
    raw = files["aiModels.json"].content.decode()
    entries = json.loads(raw, parse_float=Decimal)
    jsonschema.validate(json.loads(raw), AI_MODEL_CONFIG)
    assert not re.search(r'"(price_per_unit|pixels_per_unit)": "', raw), "prices must be JSON numbers"
    assert files["aiModels.json"].mode == 0o600 and files["byoc.json"].mode == 0o600
    assert [(e["model_id"], e.get("gateway"), e["warm"], e["capacity"]) for e in entries] == [
        ("waifu2x-upconv7", None, True, 2),
        ("waifu2x-upconv7", "0x00000000000000000000000000000000000000aa", True, 2),
        ("waifu2x-cunet", None, False, 1),
        ("waifu2x-cunet", "0x00000000000000000000000000000000000000aa", False, 1),
    ]
    first = entries[0]
    assert first["url"] == "http://127.0.0.1:8000/m/upscale/waifu2x-upconv7"  # the wildcard listen, reachable
    assert first["token"] == "tok-123-secret"
    assert (first["price_per_unit"], first["pixels_per_unit"], first["currency"]) == (Decimal("0.0005"), 262144, "USD")
    assert entries[1]["price_per_unit"] == Decimal("0.0004")
    byoc = json.loads(files["byoc.json"].content)
    assert byoc == [
        {
            "id": "depth@http://127.0.0.1:8000/m/depth/ppocr-v4-det",
            "name": "depth",
            "description": "depth with ppocr-v4-det (livepeer-appliance)",
            "url": "http://127.0.0.1:8000/m/depth/ppocr-v4-det",
            "capacity": 1,
            "price_per_unit": 1,
            "price_scaling": 1000,
            "currency": "USD",
            "token": "tok-123-secret",
        }
    ]
    config = files["livepeer.conf"].content.decode().splitlines()
    assert config[1:] == [
        "network offchain",
        "orchestrator",
        "aiWorker",
        f"aiModels {tmp_path / 'aiModels.json'}",
        'aiRunnerImageOverrides {"default":"livepeer-appliance/external:1"}',
        "nvidia 0,1",
        "monitor",
        "v 6",
    ]
    assert files["livepeer.env"].content.decode().endswith(f"LIVEPEER_CONFIG={tmp_path / 'livepeer.conf'}\n")


ON_CHAIN = """
[orchestrator]
network = "arbitrum-one-mainnet"
service_addr = "203.0.113.7:8935"
eth_url = "https://arb1.example.org/rpc"
eth_acct_addr = "0x00000000000000000000000000000000000000bb"
eth_password_file = "/etc/livepeer-appliance/eth-password"
"""


@pytest.mark.parametrize(
    ("description", "text", "message"),
    [
        (
            "on-chain model without a price",
            '[[models]]\nmodel = "u2netp"\ncapability = "segmentation"\n' + ON_CHAIN,
            "has no price",
        ),
        (
            "on-chain zero price",
            '[[models]]\nmodel = "waifu2x-upconv7"\ncapability = "upscale"\n'
            + ON_CHAIN
            + '[[pricing]]\ncapability = "upscale"\nunit = "frame"\nwidth = 8\nheight = 8\nprice = "0"\n'
            'currency = "wei"\n',
            "zero price",
        ),
        (
            "per-frame price for a BYOC capability",
            '[[models]]\nmodel = "u2netp"\ncapability = "segmentation"\n'
            '[[pricing]]\ncapability = "segmentation"\nunit = "frame"\nwidth = 8\nheight = 8\nprice = "1"\n'
            'currency = "wei"\n',
            "bills per second of compute",
        ),
        (
            "extra flag shadowing a managed one",
            '[[models]]\nmodel = "u2netp"\ncapability = "segmentation"\n'
            '[orchestrator]\nextra_flags = { network = "offchain" }\n',
            "which the node file manages",
        ),
    ],
)
def test_render_refuses_what_golivepeer_would_panic_on(
    description: str, text: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(RenderError, match=message):
        render(load_node_text(text, source="node.toml"), out_dir=tmp_path, source="node.toml")


def test_on_chain_needs_its_settings() -> None:
    with pytest.raises(ConfigError, match="needs service_addr, eth_url, eth_acct_addr, eth_password_file"):
        load_node_text(
            '[[models]]\nmodel = "u2netp"\ncapability = "segmentation"\n'
            '[orchestrator]\nnetwork = "arbitrum-one-mainnet"\n',
            source="node.toml",
        )


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"pipeline": "depth", "model_id": "m", "warm": True}], "not one of go-livepeer's"),
        (
            [
                {"pipeline": "upscale", "model_id": "m", "warm": True},
                {"pipeline": "upscale", "model_id": "m", "warm": False},
            ],
            "both warm and cold",
        ),
    ],
)
def test_final_check_catches_panics(entries: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        _check_ai_models(entries)


def test_sub_wei_price_warns(tmp_path: Path) -> None:
    text = (
        '[[models]]\nmodel = "waifu2x-upconv7"\ncapability = "upscale"\n[[pricing]]\ncapability = "upscale"\n'
        'unit = "frame"\nwidth = 512\nheight = 512\nprice = "1000"\ncurrency = "wei"\n'
    )
    rendered = render(load_node_text(text, source="n"), out_dir=tmp_path, source="n")
    assert len(rendered.warnings) == 1 and "floors to 0 wei per unit in discovery" in rendered.warnings[0]


def _lpa(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_writes_atomically_then_checks(token_file: Path, tmp_path: Path) -> None:
    node_file = tmp_path / "node.toml"
    node_file.write_text(NODE.replace("TOKEN_FILE", str(token_file)))
    out = tmp_path / "out"
    assert _lpa("render", "--node", str(node_file), "--check", "--out", str(out)).returncode == 1
    first = _lpa("render", "--node", str(node_file), "--out", str(out))
    assert first.returncode == 0 and first.stdout.count("wrote ") == 4
    assert (out / "aiModels.json").stat().st_mode & 0o777 == 0o600
    assert not list(out.glob("*.part"))
    again = _lpa("render", "--node", str(node_file), "--check", "--out", str(out))
    assert again.returncode == 0 and "up to date" in again.stdout
    node_file.write_text(node_file.read_text().replace('price = "0.0005"', 'price = "0.0006"'))
    changed = _lpa("render", "--node", str(node_file), "--check", "--out", str(out))
    assert changed.returncode == 1
    assert '"price_per_unit": 0.0006' in changed.stdout and "tok-123-secret" not in changed.stdout
    assert "<secret>" in changed.stdout


def test_cli_refusal_is_exit_2(tmp_path: Path) -> None:
    node_file = tmp_path / "node.toml"
    node_file.write_text('[[models]]\nmodel = "u2netp"\ncapability = "segmentation"\n' + ON_CHAIN)
    result = _lpa("render", "--node", str(node_file), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "refused" in result.stderr and not (tmp_path / "out").exists()


def test_example_node_file_renders(tmp_path: Path) -> None:
    result = _lpa("render", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    jsonschema.validate(json.loads((tmp_path / "aiModels.json").read_text()), AI_MODEL_CONFIG)


REMOTE_WORKER = (
    '[[models]]\nmodel = "waifu2x-upconv7"\ncapability = "upscale"\n[orchestrator]\nrole = "remote-worker"\n'
)


def test_remote_worker_joins_its_orchestrator(tmp_path: Path) -> None:
    secret = tmp_path / "orch-secret"
    text = REMOTE_WORKER + f'orch_addr = "10.0.0.5:8935"\norch_secret_file = "{secret}"\n'
    files = {f.name: f for f in render(load_node_text(text, source="n"), out_dir=tmp_path, source="n").files}
    flags = [line.split(" ")[0] for line in files["livepeer.conf"].content.decode().splitlines()[1:]]
    assert "orchestrator" not in flags and {"aiWorker", "orchAddr", "orchSecret"} <= set(flags)
    assert "orchAddr 10.0.0.5:8935\n" in files["livepeer.conf"].content.decode()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", "needs orch_addr and orch_secret_file"),
        ('orch_addr = "h:1"\norch_secret_file = "s"\nservice_addr = "h:2"\n', "service_addr: the orchestrator's"),
    ],
)
def test_remote_worker_settings_are_checked(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_node_text(REMOTE_WORKER + extra, source="n")


def test_orch_addr_belongs_to_remote_workers() -> None:
    with pytest.raises(ConfigError, match="orch_addr is for role 'remote-worker'"):
        load_node_text(REMOTE_WORKER.replace('role = "remote-worker"', 'orch_addr = "h:1"'), source="n")
