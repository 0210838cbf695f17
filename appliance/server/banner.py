"""What ``lpa serve`` says once its models are ready: where it serves, and a request a newcomer can paste.

One human-readable line on stderr (``lpa serve: ...``) and one JSON log event (``serving``) with the same facts,
so an operator reading the journal and a person at a terminal both learn the address and each entry's base URL.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import structlog

from appliance.runtime import Runtime, ServedEntry

__all__ = ["SAMPLE_IMAGE", "announce_serving", "try_command"]

log = structlog.get_logger("appliance.serve")

# The README's own photo, in a checkout (where `./dev serve` runs); elsewhere the curl names a placeholder.
SAMPLE_IMAGE = "tests/data/grace_hopper.jpg"
_PLACEHOLDER = "photo.jpg"


def try_command(address: str, entry: ServedEntry, *, token_file: str | None, image: str = SAMPLE_IMAGE) -> str:
    """A curl that calls ``entry`` the way its callers do (the contract's multipart for upscale, a raw image body
    answered with a PNG otherwise). The token is read from its file by the shell, never printed."""
    url = address + entry.inference_path
    auth = f' -H "Authorization: Bearer $(cat {shlex.quote(token_file)})"' if token_file else ""
    if entry.config.capability == "upscale":
        return f"curl -s {url}{auth} -F prompt= -F 'image=@{image};type=application/octet-stream'"
    return (
        f"curl -s {url}{auth} -H 'Content-Type: image/jpeg' -H 'Accept: image/png' "
        f"--data-binary @{image} -o {entry.config.capability}.png"
    )


def announce_serving(runtime: Runtime, *, address: str, token_file: str | None) -> None:
    """Print the serving line and log the ``serving`` event; called once, after the models loaded."""
    entries = [(entry, address + entry.base_path) for entry in runtime.entries]
    ready = [entry for entry in runtime.entries if entry.state == "OK"]
    failed = [entry.label for entry in runtime.entries if entry.state != "OK"]
    image = SAMPLE_IMAGE if Path(SAMPLE_IMAGE).is_file() else _PLACEHOLDER
    example = try_command(address, ready[0], token_file=token_file, image=image) if ready else None
    log.info(
        "serving",
        address=address,
        entries=[{"model": e.label, "state": e.state, "url": url} for e, url in entries],
        example=example,
    )
    listing = ", ".join(f"{entry.label} at {url}" for entry, url in entries if entry.state == "OK")
    line = f"lpa serve: serving {len(ready)} of {len(entries)} models on {address}: {listing or 'none'}"
    if failed:
        line += f" (failed: {', '.join(failed)}; see {address}/models)"
    if example:
        line += f"; try: {example}"
    print(line, file=sys.stderr, flush=True)
