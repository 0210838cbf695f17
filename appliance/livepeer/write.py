"""Writing rendered files atomically with their modes, or (``--check``) showing what would change."""

from __future__ import annotations

import difflib
from pathlib import Path

from appliance.atomic import write_bytes_atomically
from appliance.livepeer.render import RenderedFile

__all__ = ["changed_files", "diff_text", "write_rendered"]


def _masked(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "<secret>")
    return text


def _current(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def changed_files(files: list[RenderedFile], out_dir: Path) -> list[RenderedFile]:
    """The files whose content or mode on disk differs from the rendering."""
    changed = []
    for rendered in files:
        path = out_dir / rendered.name
        if _current(path) != rendered.content or (path.stat().st_mode & 0o777) != rendered.mode:
            changed.append(rendered)
    return changed


def diff_text(rendered: RenderedFile, out_dir: Path) -> str:
    """A unified diff of the file on disk against the rendering, secrets masked."""
    path = out_dir / rendered.name
    before = _current(path)
    old = _masked(before.decode(errors="replace"), rendered.secrets) if before is not None else ""
    new = _masked(rendered.content.decode(), rendered.secrets)
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"{path} (on disk)",
        tofile=f"{path} (rendered)",
    )
    text = "".join(lines)
    if not text and before is not None:
        text = f"{path}: mode {oct(path.stat().st_mode & 0o777)} should be {oct(rendered.mode)}\n"
    return text


def write_rendered(files: list[RenderedFile], out_dir: Path) -> list[Path]:
    """Write every changed file atomically (temp file, fsync, rename) with its mode; return what was written."""
    written = []
    for rendered in changed_files(files, out_dir):
        path = out_dir / rendered.name
        write_bytes_atomically(path, rendered.content, mode=rendered.mode)
        written.append(path)
    return written
