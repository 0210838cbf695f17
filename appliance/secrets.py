"""Reading secrets (the worker's bearer token) from files, never from the node file itself."""

from __future__ import annotations

from pathlib import Path

import structlog

from appliance.strict import ConfigError

__all__ = ["read_secret_file"]

log = structlog.get_logger("appliance.secrets")


def read_secret_file(path: str | None, *, what: str) -> str | None:
    """The file's content without surrounding whitespace; None when no file is configured.

    Raises ConfigError (naming ``what``) when the file is unreadable or empty; warns when others than its
    owner may read it.
    """
    if path is None:
        return None
    secret_path = Path(path).expanduser()
    try:
        secret = secret_path.read_text(encoding="utf-8").strip()
        mode = secret_path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{what} {secret_path}: cannot read: {exc.strerror or exc}") from exc
    if not secret:
        raise ConfigError(f"{what} {secret_path} is empty")
    if mode & 0o077:
        log.warning("secret file is readable by others than its owner; chmod 600 it", path=str(secret_path))
    return secret
