"""``lpa render``: render, then write or check."""

from __future__ import annotations

import sys
from pathlib import Path

from appliance.config import Node
from appliance.livepeer.render import RenderError, render
from appliance.livepeer.write import changed_files, diff_text, write_rendered

__all__ = ["render_command"]


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
