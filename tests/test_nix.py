"""The Nix flake's offline checks: what runs with Debian's nix-bin and no network.

nixpkgs cannot be fetched on these machines, so the package build and the NixOS VM test (``nix flake check``) run
elsewhere (nix/README.md). What runs here: every .nix file parses; the pure parts of nix/ evaluate (with
``nix-instantiate --eval --store dummy://``, which never touches a store) and agree with the Python side: the units
and their hardening with systemd/generate.py, the option defaults and bounds with the node file's msgspec structs,
the TOML writer and the example node with ``appliance.config``, the model sources with the catalog; flake.lock pins
every input by rev and narHash, and its input graph is the one Nix itself locks for flake.nix. The last tests break a
copy of a file on purpose and show each check failing.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from appliance.catalog import HttpsSource, PypiSource, load_catalog
from appliance.config import Node, ServedModel, WorkerSettings, load_node, load_node_text
from appliance.engines.settings import EngineSettings
from appliance.livepeer.settings import OrchestratorSettings

ROOT = Path(__file__).resolve().parents[1]
NIX = ROOT / "nix"
UNITS_TOML = ROOT / "systemd" / "units.toml"
NIXOS_UNITS_TOML = NIX / "units-nixos.toml"
NIX_INSTANTIATE = shutil.which("nix-instantiate")
NIX_CLI = shutil.which("nix")

pytestmark = pytest.mark.skipif(
    NIX_INSTANTIATE is None, reason="nix-instantiate is not installed (Debian: apt-get install nix-bin)"
)

# What the module substitutes for the units' placeholders ({lpa}, ...) are store paths; any stand-in will do here.
STORE = "/nix/store/00000000000000000000000000000000"
PATHS = {
    "lpa": f"{STORE}-livepeer-appliance/bin/lpa",
    "node": f"{STORE}-livepeer-node.toml",
    "livepeer": f"{STORE}-livepeer/bin/livepeer",
    "runnerImage": f"{STORE}-livepeer-runner-image",
}
GPU_ENVIRONMENT = {"LD_LIBRARY_PATH": "/run/opengl-driver/lib"}
# The node file's sections as the module declares them (nix/node-options.nix) and as the appliance decodes them.
SECTIONS: dict[str, type[msgspec.Struct]] = {
    "worker": WorkerSettings,
    "models": ServedModel,
    "orchestrator": OrchestratorSettings,
    "engines": EngineSettings,
}
# Where NixOS keeps the node's paths (the module's layout) instead of the Python defaults (a user's home).
LAYOUT = {("worker", "model_dir"), ("orchestrator", "config_dir"), ("engines", "cache_dir")}
# The inputs each pinned flake itself declares at its locked rev (their flake.nix; published locks of these revs show
# the same): the fake flakes of the lock-graph test declare the same, so Nix must find every one followed.
PINNED_FLAKE_INPUTS = {
    "nixpkgs": [],
    "pyproject-nix": ["nixpkgs"],
    "uv2nix": ["nixpkgs", "pyproject-nix"],
    "pyproject-build-systems": ["nixpkgs", "pyproject-nix", "uv2nix"],
}


class NixError(Exception):
    """nix-instantiate failed; the message is its stderr."""


def nix_path(path: Path) -> str:
    """A Nix expression for an absolute path (a path value, so ``import`` and relative imports work)."""
    assert "$" not in str(path) and '"' not in str(path), path
    return f'(/. + "{path}")'


def nix_eval(expr: str, **json_args: Any) -> Any:
    """Evaluate ``expr`` strictly to JSON with no store; each keyword is bound to its value (passed as JSON)."""
    command = [str(NIX_INSTANTIATE), "--store", "dummy://", "--eval", "--strict", "--json"]
    for name, value in json_args.items():
        command += ["--argstr", f"{name}Json", json.dumps(value)]
    if json_args:
        params = ", ".join(f"{name}Json" for name in json_args)
        bindings = " ".join(f"{name} = builtins.fromJSON {name}Json;" for name in json_args)
        expr = f"{{ {params} }}: let {bindings} in {expr}"
    result = subprocess.run([*command, "--expr", expr], capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise NixError(result.stderr)
    return json.loads(result.stdout)


def parse_error(path: Path) -> str | None:
    """nix-instantiate's complaint about the file's syntax (or an undefined name), None when it parses."""
    result = subprocess.run(
        [str(NIX_INSTANTIATE), "--parse", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    return None if result.returncode == 0 else result.stderr or f"exit {result.returncode}"


def nix_files() -> list[Path]:
    return [ROOT / "flake.nix", *sorted(NIX.rglob("*.nix"))]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_units", ROOT / "systemd" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


# --- the units ------------------------------------------------------------------------------------------------------


def nixos_units(
    *,
    units_nix: Path = NIX / "units.nix",
    units_toml: Path = UNITS_TOML,
    user: str = "livepeer",
    group: str = "livepeer",
    gpus: tuple[int, ...] = (0,),
) -> dict[str, Any]:
    """What nix/units.nix gives the module: {services, targets, profiles, instances}."""
    return nix_eval(
        f"""import {nix_path(units_nix)} {{
          units = builtins.fromTOML (builtins.readFile {nix_path(units_toml)});
          extraUnits = builtins.fromTOML (builtins.readFile {nix_path(NIXOS_UNITS_TOML)});
          inherit paths user group gpus gpuEnvironment;
        }}""",
        paths=PATHS,
        user=user,
        group=group,
        gpus=list(gpus),
        gpuEnvironment=GPU_ENVIRONMENT,
    )


def _substitute(value: Any) -> Any:
    """generate.py's placeholder substitution, on a value rather than a unit file line."""
    if isinstance(value, list):
        return [_substitute(item) for item in value]
    if isinstance(value, str):
        for name, path in PATHS.items():
            value = value.replace("{" + name + "}", path)
    return value


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


UNIT_LISTS = {"Wants": "wants", "Requires": "requires", "After": "after", "Before": "before", "PartOf": "partOf"}
INSTALL_LISTS = {"WantedBy": "wantedBy", "RequiredBy": "requiredBy"}


def expected_definition(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The NixOS definition of one unit, worked out independently from units.toml and generate.py."""
    unit = data["units"][name]
    section = {key: _substitute(value) for key, value in unit.get("Unit", {}).items()}
    definition: dict[str, Any] = {"unitConfig": {}}
    for key, value in section.items():
        if key == "Description":
            definition["description"] = value
        elif key == "Documentation":
            definition["documentation"] = _as_list(value)
        elif key in UNIT_LISTS:
            definition[UNIT_LISTS[key]] = _as_list(value)
        else:
            definition["unitConfig"][key] = value
    if "@." not in name:
        for key, value in unit.get("Install", {}).items():
            definition[INSTALL_LISTS[key]] = _as_list(value)
    if name.endswith(".service"):
        own, hardening = _generator().service_settings(data, name)
        definition["serviceConfig"] = {key: _substitute(value) for key, value in {**hardening, **own}.items()}
        if "gpu" in unit["profiles"]:
            definition["environment"] = GPU_ENVIRONMENT
    return definition


def all_units_data(units_toml: Path = UNITS_TOML) -> dict[str, Any]:
    """units.toml with the NixOS-only units beside its own, for generate.py's service_settings()."""
    data = _load_toml(units_toml)
    extra = _load_toml(NIXOS_UNITS_TOML)
    return {**data, "units": {**data["units"], **extra["units"]}}


def unit_mismatches(nixos: dict[str, Any], data: dict[str, Any], gpus: tuple[int, ...] = (0,)) -> list[str]:
    """Every way the NixOS definitions differ from units.toml as generate.py reads it (empty: they agree)."""
    problems = []
    for name in data["units"]:
        base, _, kind = name.rpartition(".")
        got = nixos[f"{kind}s"].get(base)
        if got is None:
            problems.append(f"{name}: missing from the NixOS units")
            continue
        want = expected_definition(data, name)
        for template, other in data["units"].items():  # a template's WantedBy: one instance per GPU
            if "@." in template and name in _as_list(other.get("Install", {}).get("WantedBy", [])):
                prefix, _, suffix = template.partition("@")
                want["wants"] = [*want.get("wants", []), *(f"{prefix}@{gpu}{suffix}" for gpu in gpus)]
        for key in sorted(set(got) | set(want)):
            if key == "serviceConfig":
                for setting in sorted(set(got.get(key, {})) | set(want.get(key, {}))):
                    mine, theirs = got.get(key, {}).get(setting), want.get(key, {}).get(setting)
                    if mine != theirs:
                        problems.append(f"{name}: {setting}: NixOS {mine!r}, generate.py {theirs!r}")
            elif got.get(key) != want.get(key):
                problems.append(f"{name}: {key}: NixOS {got.get(key)!r}, units.toml {want.get(key)!r}")
    extra = sorted(set(nixos["services"]) - {n.rpartition(".")[0] for n in data["units"]})
    problems += [f"{base}: a NixOS unit units.toml does not have" for base in extra]
    return problems


def test_every_unit_has_the_settings_and_hardening_generate_py_writes() -> None:
    assert unit_mismatches(nixos_units(), all_units_data()) == []


def test_nixos_only_units_take_the_profiles_unchanged() -> None:
    data = all_units_data()
    nixos = nixos_units()
    extra = _load_toml(NIXOS_UNITS_TOML)["units"]
    assert extra, "nix/units-nixos.toml lists no unit"
    for name, unit in extra.items():
        assert set(unit["profiles"]) <= set(data["hardening"]), name
        merged: dict[str, Any] = {}
        for profile in unit["profiles"]:
            merged.update(data["hardening"][profile])
        settings = nixos["services"][name.rpartition(".")[0]]["serviceConfig"]
        overridden = set(merged) & set(unit["Service"])
        assert overridden == set(), f"{name} overrides its hardening: {sorted(overridden)}"
        assert {key: settings[key] for key in merged} == merged, name


def test_worker_instances_follow_the_gpus_and_the_template_is_not_installed_bare() -> None:
    nixos = nixos_units(gpus=(0, 2))
    assert nixos["targets"]["livepeer-workers"]["wants"] == ["livepeer-worker@0.service", "livepeer-worker@2.service"]
    assert "wantedBy" not in nixos["services"]["livepeer-worker@"]
    assert nixos["services"]["livepeer-worker@"]["serviceConfig"]["Type"] == "notify"


def test_user_and_group_options_reach_every_service() -> None:
    nixos = nixos_units(user="lp-node", group="lp-group")
    for base, definition in nixos["services"].items():
        assert definition["serviceConfig"]["User"] == "lp-node", base
        assert definition["serviceConfig"]["Group"] == "lp-group", base


def test_only_gpu_units_get_the_driver_library_path() -> None:
    nixos = nixos_units()
    for name, profiles in nixos["profiles"].items():
        base, _, kind = name.rpartition(".")
        if kind == "service":
            assert ("environment" in nixos["services"][base]) == ("gpu" in profiles), name


def test_the_orchestrator_reads_what_the_render_unit_writes() -> None:
    """EnvironmentFile (units.toml) sits in orchestrator.config_dir, which the module links to the runtime dir."""
    nixos = nixos_units()
    env_file = nixos["services"]["livepeer-orchestrator"]["serviceConfig"]["EnvironmentFile"]
    assert str(Path(env_file).parent) == node_options()["orchestrator"]["config_dir"]["default"]
    render = nixos["services"]["livepeer-render"]
    assert render["requiredBy"] == ["livepeer-orchestrator.service"]
    assert render["before"] == ["livepeer-orchestrator.service"]
    assert render["serviceConfig"]["ExecStart"] == f"{PATHS['lpa']} render --node {PATHS['node']}"


# --- the node file: option defaults, the TOML writer, the example node --------------------------------------------


@functools.cache
def node_options() -> dict[str, Any]:
    return nix_eval(f"import {nix_path(NIX / 'node-options.nix')}")


def _python_field_facts(kind: Any) -> dict[str, Any]:
    """Bounds and choices of a msgspec field type, in node-options.nix's terms."""
    if isinstance(kind, mi.UnionType):
        kinds = [k for k in kind.types if not isinstance(k, mi.NoneType)]
        return _python_field_facts(kinds[0]) if len(kinds) == 1 else {}
    if isinstance(kind, mi.LiteralType):
        return {"choices": sorted(kind.values)}
    if isinstance(kind, mi.IntType | mi.FloatType) and kind.ge is not None:
        return {"min": kind.ge, "max": kind.le}
    if isinstance(kind, mi.ListType) and isinstance(kind.item_type, mi.IntType):
        return {"itemMin": kind.item_type.ge, "itemMax": kind.item_type.le}
    return {}


def _python_default(field: mi.Field) -> Any:
    if field.required:
        return msgspec.NODEFAULT
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return field.default


def test_node_options_match_every_field_of_the_appliance_structs() -> None:
    schema = node_options()
    services = {name: unit["Service"] for name, unit in _load_toml(UNITS_TOML)["units"].items() if "Service" in unit}
    layout = {  # the units' own directories
        ("worker", "model_dir"): f"/var/lib/{services['livepeer-models.service']['StateDirectory']}/models",
        ("engines", "cache_dir"): f"/var/cache/{services['livepeer-engines.service']['CacheDirectory']}/engines",
        ("orchestrator", "config_dir"): str(Path(services["livepeer-orchestrator.service"]["EnvironmentFile"]).parent),
    }
    assert set(schema) == {*SECTIONS, "pricing"}
    for section, struct in SECTIONS.items():
        fields = {field.name: field for field in mi.type_info(struct).fields}
        assert set(schema[section]) == set(fields), f"[{section}]: Nix and Python declare different fields"
        for name, field in fields.items():
            spec = schema[section][name]
            where = f"{section}.{name}"
            if (section, name) in LAYOUT:
                assert spec.get("layout") is True, where
                assert spec["default"] == layout[section, name], where
            elif field.required:
                assert "default" not in spec, f"{where} is required in Python"
            else:
                assert spec["default"] == _python_default(field), where
            facts = _python_field_facts(field.type)
            got = {key: spec[key] for key in ("choices", "min", "max", "itemMin", "itemMax") if key in spec}
            if "choices" in got:
                got["choices"] = sorted(got["choices"])
            assert got == facts, where
    assert schema["pricing"]["default"] == []
    assert {f.name for f in mi.type_info(Node).fields} == set(schema)


def _table_struct(kind: Any) -> mi.StructType | None:
    """The struct of a field that is a table (or an optional one), else None."""
    if isinstance(kind, mi.UnionType):
        kinds = [k for k in kind.types if not isinstance(k, mi.NoneType)]
        return _table_struct(kinds[0]) if len(kinds) == 1 else None
    return kind if isinstance(kind, mi.StructType) else None


def test_node_options_list_the_fields_of_nested_tables() -> None:
    """A field that is a table (`models[].batch`) lists its own fields in node-options.nix, checked the same way."""
    schema = node_options()
    nested = 0
    for section, struct in SECTIONS.items():
        for outer in mi.type_info(struct).fields:
            table = _table_struct(outer.type)
            if table is None:
                assert "fields" not in schema[section].get(outer.name, {}), f"{section}.{outer.name} is no table"
                continue
            nested += 1
            declared = schema[section][outer.name]["fields"]
            assert set(declared) == {f.name for f in table.fields}, f"{section}.{outer.name}"
            for field in table.fields:
                spec, where = declared[field.name], f"{section}.{outer.name}.{field.name}"
                if field.required:
                    assert "default" not in spec, f"{where} is required in Python"
                else:
                    assert spec["default"] == _python_default(field), where
                got = {key: spec[key] for key in ("choices", "min", "max", "itemMin", "itemMax") if key in spec}
                assert got == _python_field_facts(field.type), where
    assert nested >= 1


@functools.cache
def module_options() -> list[dict[str, Any]]:
    """nix/module.nix's option declarations, evaluated with a stand-in lib (nix/tests/lib-stub.nix)."""
    return nix_eval(f"import {nix_path(NIX / 'tests' / 'options.nix')}")


def test_every_module_option_is_typed_described_and_has_an_example() -> None:
    options = module_options()
    assert len(options) > 40
    for option in options:
        name = ".".join(option["path"])
        assert option["type"]["name"], name
        assert option["description"], f"{name} has no description"
        assert option["example"], f"{name} has no example"


def test_module_declares_each_node_field_with_its_bounds_and_default() -> None:
    schema = node_options()
    declared = {
        tuple(o["path"][3:]): o
        for o in module_options()
        if o["path"][:3] == ["services", "livepeer-appliance", "settings"]
    }
    top = {o["path"][2]: o for o in module_options() if len(o["path"]) == 3}
    for section in SECTIONS:
        for name, spec in schema[section].items():
            option = declared.get((section, name))
            assert option is not None, f"settings.{section}.{name} is not declared"
            kind = option["type"]
            if "choices" in spec:
                assert kind == {"name": "enum", "values": spec["choices"]}, name
            if "min" in spec:
                assert (kind["min"], kind["max"]) == (spec["min"], spec["max"]), name
            if "setBy" in spec:
                assert option["defaultFrom"] == f"config.services.livepeer-appliance.{spec['setBy']}", name
                assert top[spec["setBy"]]["default"] == spec["default"], name
            elif "default" in spec:
                assert option["default"] == spec["default"], name
            else:
                assert "default" not in option, f"{name} must be required"


def render_toml(value: dict[str, Any], toml_nix: Path = NIX / "toml.nix") -> str:
    return nix_eval(f"(import {nix_path(toml_nix)}).render value", value=value)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


TRICKY = {
    "plain": "text",
    "quotes": 'say "hi" \\ back',
    "lines": "one\ntwo\r\nthree\ttab",
    "controls": "\x01\x08\x0c\x1f\x7f",
    "unicode": "512×512 é 😀",
    "key with spaces": 1,
    "dotted.key": True,
    "ünïcode-key": False,
    "negative": -42,
    "big": 2**53,
    "floats": [0.5, -2.25, 30.0],
    "empty_list": [],
    "nested_list": [[1, 2], ["a"]],
    "inline_tables": [{"a": 1}, {"b": {"c": "d"}}],
    "absent": None,
    "table": {
        "x": 1,
        "absent": None,
        "sub": {"deep": {"deeper": "yes"}},
        "empty": {},
        "rows": [{"p": 1, "q": {"r": [1, 2]}}, {"p": 2, "rows": [{"z": "inner"}]}],
    },
    "models": [{"model": "m", "opts": {"k": "v"}}],
}


def test_toml_writer_round_trips_what_json_says() -> None:
    text = render_toml(TRICKY)
    assert tomllib.loads(text) == _without_nulls(TRICKY)


def test_example_node_says_what_node_example_toml_says_but_for_the_nixos_layout() -> None:
    example = nix_eval(f"import {nix_path(NIX / 'example-node.nix')}")
    reference = _load_toml(ROOT / "node.example.toml")
    for section, name in LAYOUT:
        reference[section].pop(name)
    assert example == reference


def module_node(settings: dict[str, Any]) -> dict[str, Any]:
    """The node the module renders for `settings`: declared fields take node-options.nix's defaults (what the
    module system does with option defaults, done here by hand), free-form ones pass through."""
    schema = node_options()
    top_level = {"tokenFile": None, "orchSecretFile": None, "ethPasswordFile": None, "gpus": [0]}

    def defaults(section: str) -> dict[str, Any]:
        out = {}
        for name, spec in schema[section].items():
            if "setBy" in spec:
                out[name] = top_level[spec["setBy"]]
            elif "default" in spec:
                out[name] = spec["default"]
        return out

    node = dict(settings)
    for section in ("worker", "orchestrator", "engines"):
        node[section] = {**defaults(section), **settings.get(section, {})}
    node["models"] = [{**defaults("models"), **entry} for entry in settings["models"]]
    node.setdefault("pricing", schema["pricing"]["default"])
    return node


def test_the_module_renders_the_example_node_into_a_file_the_appliance_loads() -> None:
    example = nix_eval(f"import {nix_path(NIX / 'example-node.nix')}")
    text = render_toml(module_node(example))
    loaded = load_node_text(text, source="nix/example-node.nix")
    reference = load_node(ROOT / "node.example.toml")
    schema = node_options()
    expected = msgspec.structs.replace(
        reference,
        worker=msgspec.structs.replace(reference.worker, model_dir=schema["worker"]["model_dir"]["default"]),
        orchestrator=msgspec.structs.replace(
            reference.orchestrator, config_dir=schema["orchestrator"]["config_dir"]["default"]
        ),
        engines=msgspec.structs.replace(reference.engines, cache_dir=schema["engines"]["cache_dir"]["default"]),
    )
    assert loaded == expected


def test_module_defaults_alone_make_a_valid_node_with_the_python_defaults() -> None:
    text = render_toml(module_node({"models": [{"model": "u2netp", "capability": "segmentation"}]}))
    loaded = load_node_text(text, source="defaults")
    python = Node(models=[ServedModel(model="u2netp", capability="segmentation")])
    for section, name in LAYOUT:
        assert getattr(getattr(loaded, section), name) != getattr(getattr(python, section), name)
    assert (
        msgspec.structs.replace(
            loaded,
            worker=msgspec.structs.replace(loaded.worker, model_dir=python.worker.model_dir),
            orchestrator=msgspec.structs.replace(loaded.orchestrator, config_dir=python.orchestrator.config_dir),
            engines=msgspec.structs.replace(loaded.engines, cache_dir=python.engines.cache_dir),
        )
        == python
    )


# --- model sources ------------------------------------------------------------------------------------------------


def test_every_pinned_model_has_a_nix_source_matching_the_catalog() -> None:
    catalog = load_catalog(ROOT / "models")
    names = sorted(catalog.manifests)
    sources = nix_eval(
        f"import {nix_path(NIX / 'model-sources.nix')} {{ catalog = {nix_path(ROOT / 'models')}; inherit names; }}",
        names=names,
    )
    dists = nix_eval(f"import {nix_path(NIX / 'model-dists.nix')}")
    assert [s["name"] for s in sources] == names
    for source in sources:
        manifest = catalog.manifests[source["name"]]
        assert (source["file"], source["sha256"]) == (manifest.file, manifest.sha256), source["name"]
        match manifest.source:
            case HttpsSource(url=url):
                assert source["fetch"] == {"url": url, "sha256": manifest.sha256}
                assert source["member"] is None
            case PypiSource(dist=dist, member=member):
                assert source["fetch"] == dists[dist]
                assert source["member"] == member
                assert dists[dist]["url"].rsplit("/", 1)[1] == dist
                assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", dists[dist]["hash"]), dist
            case _:
                pytest.fail(f"{source['name']}: no Nix source for {manifest.source!r}")


# --- flake.nix and flake.lock -------------------------------------------------------------------------------------


def lock_problems(flake_nix: Path = ROOT / "flake.nix", flake_lock: Path = ROOT / "flake.lock") -> list[str]:
    """How flake.lock fails to pin flake.nix's inputs by rev and narHash, or to follow what flake.nix says."""
    inputs = nix_eval(f"(import {nix_path(flake_nix)}).inputs")
    lock = json.loads(flake_lock.read_text())
    nodes = lock["nodes"]
    root = nodes[lock["root"]]
    problems = []
    if lock.get("version") != 7:
        problems.append(f"lock version {lock.get('version')}, expected 7")
    if set(root.get("inputs", {})) != set(inputs):
        problems.append(f"root inputs {sorted(root.get('inputs', {}))} != flake.nix inputs {sorted(inputs)}")
    for name, spec in inputs.items():
        ref = root.get("inputs", {}).get(name)
        node = nodes.get(ref) if isinstance(ref, str) else None
        if node is None:
            problems.append(f"{name}: not locked")
            continue
        locked, original = node.get("locked", {}), node.get("original", {})
        if not re.fullmatch(r"[0-9a-f]{40}", locked.get("rev", "")):
            problems.append(f"{name}: no rev")
        if not re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", locked.get("narHash", "")):
            problems.append(f"{name}: no narHash")
        if not isinstance(locked.get("lastModified"), int):
            problems.append(f"{name}: no lastModified")
        kind, _, rest = spec["url"].partition(":")
        owner, repo, *ref_part = rest.split("/")
        want = {"type": kind, "owner": owner, "repo": repo, **({"ref": ref_part[0]} if ref_part else {})}
        if original != want:
            problems.append(f"{name}: original {original} does not say what flake.nix says ({want})")
        if {k: locked.get(k) for k in ("type", "owner", "repo")} != {k: want[k] for k in ("type", "owner", "repo")}:
            problems.append(f"{name}: locks another repository than flake.nix names")
        problems += _follows_problems(name, spec.get("inputs", {}), node.get("inputs", {}))
    return problems


def _follows_problems(name: str, declared: dict[str, Any], locked: dict[str, Any]) -> list[str]:
    """The lock's edges of one input against the `follows` flake.nix declares for it, both ways."""
    problems = []
    for sub, sub_spec in declared.items():
        follows = sub_spec.get("follows")
        if follows is not None and locked.get(sub) != follows.split("/"):
            problems.append(f"{name}.{sub}: should follow {follows}, lock says {locked.get(sub)}")
    for sub, target in locked.items():
        if isinstance(target, list) and "follows" not in declared.get(sub, {}):
            problems.append(f"{name}.{sub}: the lock follows {'/'.join(target)}, flake.nix does not ask it to")
    return problems


def test_flake_lock_pins_every_input_by_rev_and_narhash() -> None:
    assert lock_problems() == []


def test_flake_lock_graph_is_what_nix_locks_for_flake_nix(tmp_path: Path) -> None:
    """Nix itself locks flake.nix against stand-ins that declare the pinned flakes' inputs: the same graph as ours.

    An input whose own input flake.nix forgot to follow would make Nix fetch it from GitHub, which fails offline.
    """
    if NIX_CLI is None:
        pytest.fail("nix-bin installs nix beside nix-instantiate; `nix` is missing")
    fakes = tmp_path / "inputs"
    for name, declared in PINNED_FLAKE_INPUTS.items():
        (fakes / name).mkdir(parents=True)
        text = "".join(f'  inputs.{i}.url = "github:example/{i}";\n' for i in declared)
        (fakes / name / "flake.nix").write_text("{\n" + text + "  outputs = _: { };\n}\n")
    work = tmp_path / "flake"
    work.mkdir()
    shutil.copy(ROOT / "flake.nix", work / "flake.nix")
    overrides = [arg for name in PINNED_FLAKE_INPUTS for arg in ("--override-input", name, f"path:{fakes / name}")]
    nix = [NIX_CLI, "--extra-experimental-features", "nix-command flakes", "--offline", "--store", str(tmp_path / "s")]
    result = subprocess.run(
        [*nix, "flake", "lock", f"path:{work}", *overrides],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    generated = json.loads((work / "flake.lock").read_text())["nodes"]
    ours = json.loads((ROOT / "flake.lock").read_text())["nodes"]
    # Same nodes, same edges (follows), same `original` for each: only `locked` differs (theirs are the stand-ins).
    graph = {k: (v.get("inputs"), v.get("original")) for k, v in generated.items()}
    assert graph == {k: (v.get("inputs"), v.get("original")) for k, v in ours.items()}


# --- every .nix file parses -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", nix_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nix_file_parses(path: Path) -> None:
    assert parse_error(path) is None


# --- the checks fail when they should -------------------------------------------------------------------------------


def test_parse_check_reports_a_syntax_error(tmp_path: Path) -> None:
    broken = tmp_path / "module.nix"
    broken.write_text((NIX / "module.nix").read_text().replace("cfg = config.services.livepeer-appliance;", "cfg ="))
    error = parse_error(broken)
    assert error is not None and "syntax error" in error


def test_parse_check_reports_an_undefined_name(tmp_path: Path) -> None:
    broken = tmp_path / "units.nix"
    broken.write_text((NIX / "units.nix").read_text().replace("asList section.${key}", "asLsit section.${key}", 1))
    error = parse_error(broken)
    assert error is not None and "undefined variable 'asLsit'" in error


def test_units_check_reports_a_changed_hardening_value(tmp_path: Path) -> None:
    changed = tmp_path / "units.toml"
    changed.write_text(UNITS_TOML.read_text().replace('ProtectSystem = "strict"', 'ProtectSystem = "full"'))
    problems = unit_mismatches(nixos_units(units_toml=changed), all_units_data())
    assert problems
    assert all("ProtectSystem" in problem for problem in problems)
    assert len(problems) == len(nixos_units()["services"])


def test_units_check_reports_hardening_that_wins_over_a_units_own_setting(tmp_path: Path) -> None:
    shutil.copytree(NIX, tmp_path / "nix")
    broken = tmp_path / "nix" / "units.nix"
    source = broken.read_text()
    assert "hardening // (unit.Service or { })" in source
    broken.write_text(source.replace("hardening // (unit.Service or { })", "(unit.Service or { }) // hardening"))
    problems = unit_mismatches(nixos_units(units_nix=broken), all_units_data())
    assert any(p.startswith("livepeer-orchestrator.service: SupplementaryGroups") for p in problems), problems


def test_lock_check_reports_a_missing_narhash_and_a_broken_follows(tmp_path: Path) -> None:
    lock = json.loads((ROOT / "flake.lock").read_text())
    del lock["nodes"]["uv2nix"]["locked"]["narHash"]
    lock["nodes"]["pyproject-build-systems"]["inputs"]["uv2nix"] = "uv2nix_2"
    broken = tmp_path / "flake.lock"
    broken.write_text(json.dumps(lock))
    problems = lock_problems(flake_lock=broken)
    assert "uv2nix: no narHash" in problems
    assert any(p.startswith("pyproject-build-systems.uv2nix: should follow uv2nix") for p in problems), problems


def test_toml_check_reports_a_writer_that_drops_escapes(tmp_path: Path) -> None:
    broken = tmp_path / "toml.nix"
    source = (NIX / "toml.nix").read_text()
    assert "replaceStrings ([" in source
    broken.write_text(source.replace("replaceStrings ([", "(_: _: text: text) ([", 1))
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(render_toml(TRICKY, broken))
