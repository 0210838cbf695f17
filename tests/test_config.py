"""The node file and the catalog: strict decoding, errors that name file and path, the shipped files."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.catalog import load_catalog
from appliance.config import load_node, load_node_text, parse_listen
from appliance.resources import bundled_catalog_dir, example_node_file
from appliance.runtime import Runtime
from appliance.strict import ConfigError

MINIMAL = '[[models]]\nmodel = "u2netp"\ncapability = "segmentation"\n'


def test_example_node_file_loads_and_matches_the_catalog() -> None:
    node = load_node(example_node_file())
    catalog = load_catalog(bundled_catalog_dir())
    assert node.worker.listen.startswith("127.0.0.1:"), "the worker must listen on loopback by default"
    for served in node.models:
        assert catalog.get(served.model).capability == served.capability


def test_defaults_are_safe() -> None:
    node = load_node_text(MINIMAL, source="t.toml")
    assert parse_listen(node.worker.listen)[0] == "127.0.0.1"
    assert node.worker.token_file is None
    assert node.models[0].capacity == 1 and node.models[0].served_id == "u2netp"


@pytest.mark.parametrize(
    ("description", "text", "expected"),
    [
        ("unknown key in a model", MINIMAL + "colour = 1\n", "unknown field `colour` - at `$.models[0]`"),
        ("unknown section", MINIMAL + "[workers]\n", "unknown field `workers`"),
        ("capacity below 1", MINIMAL + "capacity = 0\n", "Expected `int` >= 1 - at `$.models[0].capacity`"),
        (
            "capacity as a string",
            MINIMAL + 'capacity = "2"\n',
            "Expected `int`, got `str` - at `$.models[0].capacity`",
        ),
        (
            "capability outside the list",
            '[[models]]\nmodel = "x"\ncapability = "llm"\n',
            "at `$.models[0].capability`",
        ),
        ("no models", "[worker]\n", "missing required field `models`"),
        ("empty models", "models = []\n", "Expected `array` of length >= 1 - at `$.models`"),
        ("listen without a port", '[worker]\nlisten = "127.0.0.1"\n' + MINIMAL, "must look like HOST:PORT"),
        (
            "listen with a hostname",
            '[worker]\nlisten = "example.com:80"\n' + MINIMAL,
            "must be an IP address",
        ),
        ("listen port out of range", '[worker]\nlisten = "0.0.0.0:70000"\n' + MINIMAL, "outside 1..65535"),
        ("model_id with a space", MINIMAL + 'model_id = "a b"\n', "at `$.models[0].model_id`"),
        ("model_id with a '..' segment", MINIMAL + 'model_id = "a/.."\n', "at `$.models[0].model_id`"),
        ("same model_id twice", MINIMAL + MINIMAL, "served twice"),
        ("not TOML", "[[models]\n", "not valid TOML"),
        (
            "pixel limit too small",
            "[worker]\nmax_image_pixels = 1\n" + MINIMAL,
            "at `$.worker.max_image_pixels`",
        ),
        (
            "no time at all for a request body",
            "[worker]\nbody_timeout_seconds = 0\n" + MINIMAL,
            "Expected `float` >= 0.1 - at `$.worker.body_timeout_seconds`",
        ),
        (
            "a request body timeout as a string",
            '[worker]\nbody_timeout_seconds = "30s"\n' + MINIMAL,
            "Expected `float`, got `str` - at `$.worker.body_timeout_seconds`",
        ),
    ],
)
def test_errors_name_the_file_and_path(description: str, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_node_text(text, source="node.toml")
    message = str(caught.value)
    assert message.startswith("node.toml: ") and expected in message, message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_node(tmp_path / "absent.toml")


def test_capability_must_match_the_manifest() -> None:
    node = load_node_text('[[models]]\nmodel = "u2netp"\ncapability = "depth"\n', source="t.toml")
    with pytest.raises(ValueError, match="is a 'segmentation' model, not 'depth'"):
        Runtime(node, load_catalog(bundled_catalog_dir()))


def test_unknown_catalog_model_is_named() -> None:
    node = load_node_text('[[models]]\nmodel = "nope"\ncapability = "depth"\n', source="t.toml")
    with pytest.raises(ConfigError, match=r"no model named 'nope'.*known: .*u2netp"):
        Runtime(node, load_catalog(bundled_catalog_dir()))


def test_every_shipped_manifest_is_valid_and_pinned() -> None:
    catalog = load_catalog(bundled_catalog_dir())
    assert {
        "u2netp",
        "waifu2x-upconv7",
        "waifu2x-cunet",
        "ppocr-v4-det",
        "depth-anything-v2-small",
        "fast-neural-style-mosaic",
    } <= set(catalog.manifests)
    for manifest in catalog.manifests.values():
        assert manifest.licence and manifest.description
        assert manifest.sha256 is not None, f"{manifest.name}: every shipped manifest carries a verified hash"


def test_manifest_errors_name_the_file(tmp_path: Path) -> None:
    source = (bundled_catalog_dir() / "u2netp.toml").read_text(encoding="utf-8")
    (tmp_path / "u2netp.toml").write_text(source.replace('kind = "pypi"', 'kind = "ftp"'), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"u2netp\.toml: Invalid value 'ftp' - at `\$\.source\.kind`"):
        load_catalog(tmp_path)
    (tmp_path / "u2netp.toml").write_text(source.replace('name = "u2netp"', 'name = "other"'), encoding="utf-8")
    with pytest.raises(ConfigError, match="must match the file name"):
        load_catalog(tmp_path)
