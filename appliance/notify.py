"""systemd's readiness protocol (sd_notify), so a ``Type=notify`` unit's start returns when the worker can serve.

Messages go as one datagram to the socket in ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace); without it (not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify"]


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``READY=1``, ``STATUS=...``, ``STOPPING=1`` ...; True when a message was sent."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address or not fields:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto("\n".join(fields).encode(), target)
        except OSError:  # systemd gone or the socket not ours: readiness is best effort, serving is not
            return False
    return True
