"""``lpa render``: render, then write or check."""

from __future__ import annotations

import sys
from pathlib import Path

from appliance.config import Node
from appliance.livepeer.gateway import GatewayError, compare, fetch_capabilities, find_orchestrator
from appliance.livepeer.render import RenderError, render
from appliance.livepeer.write import changed_files, diff_text, write_rendered

__all__ = ["check_gateway_command", "render_command"]


def render_command(node: Node, *, out_dir: Path, source: str, check: bool) -> int:
    try:
        rendered = render(node, out_dir=out_dir, source=source)
    except RenderError as exc:
        print(f"lpa render: refused: {exc}", file=sys.stderr)
        return 2
    for warning in rendered.warnings:
        print(f"lpa render: warning: {warning}", file=sys.stderr)
    if check:
        changed = changed_files(rendered.files, out_dir)
        for file in changed:
            sys.stdout.write(diff_text(file, out_dir))
        print(f"{len(changed)} of {len(rendered.files)} files would change" if changed else "up to date")
        return 1 if changed else 0
    for path in write_rendered(rendered.files, out_dir):
        print(f"wrote {path}")
    return 0


def check_gateway_command(node: Node, gateway: str, *, address: str | None, service_uri: str | None) -> int:
    settings = node.orchestrator
    address = address or settings.eth_acct_addr
    service_uri = service_uri or (f"https://{settings.service_addr}" if settings.service_addr else None)
    try:
        orchestrator = find_orchestrator(fetch_capabilities(gateway), address=address, service_uri=service_uri)
    except GatewayError as exc:
        print(f"lpa check-gateway: {exc}", file=sys.stderr)
        return 2
    findings = compare(node, orchestrator)
    print(f"{'capability':20} {'model':28} {'field':11} {'rendered':24} {'network':24} verdict")
    for f in findings:
        print(
            f"{f.capability:20} {f.model:28} {f.field:11} {f.rendered:24} {f.network:24} {'ok' if f.ok else 'MISMATCH'}"
        )
    mismatches = sum(not f.ok for f in findings)
    print("the network sees this node as rendered" if not mismatches else f"{mismatches} mismatch(es)")
    return 1 if mismatches else 0
