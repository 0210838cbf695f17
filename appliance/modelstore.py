"""Where model files live on disk, which hash each must have, and the check done before any file is used.

A manifest's sha256 is the authority. A model whose manifest has none was fetched with
``--trust-on-first-use``: the hash seen then is recorded in ``pins.json`` in the model folder and is the
authority from then on.
"""

from __future__ import annotations

import json
from pathlib import Path

from appliance.atomic import sha256_file, write_bytes_atomically
from appliance.catalog import Manifest

__all__ = ["ModelFileError", "ModelStore"]


class ModelFileError(Exception):
    """A model file is missing, unpinned, or does not hash to what it must. The message says which and why."""


class ModelStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def pins_path(self) -> Path:
        return self.directory / "pins.json"

    def path_for(self, manifest: Manifest) -> Path:
        return self.directory / manifest.file

    def pins(self) -> dict[str, str]:
        try:
            raw = json.loads(self.pins_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{self.pins_path}: unreadable: {exc}") from exc
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise ModelFileError(f"{self.pins_path}: expected an object of model name → sha256")
        return raw

    def record_pin(self, manifest: Manifest, sha256: str) -> None:
        pins = self.pins()
        pins[manifest.name] = sha256
        data = json.dumps(pins, indent=2, sort_keys=True).encode() + b"\n"
        write_bytes_atomically(self.pins_path, data)

    def expected_sha256(self, manifest: Manifest) -> str | None:
        """The manifest's hash, else the trust-on-first-use pin, else None (nobody has vouched for it)."""
        return manifest.sha256 or self.pins().get(manifest.name)

    def verified_path(self, manifest: Manifest) -> Path:
        """The model's path after checking its sha256; raises ModelFileError on anything short of a match."""
        path = self.path_for(manifest)
        expected = self.expected_sha256(manifest)
        if expected is None:
            raise ModelFileError(
                f"model {manifest.name!r} has no pinned sha256: set one in its manifest "
                "or fetch it with `lpa fetch-models --trust-on-first-use`"
            )
        if not path.is_file():
            raise ModelFileError(f"model {manifest.name!r}: {path} is missing; run `lpa fetch-models`")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelFileError(
                f"model {manifest.name!r}: {path} has sha256 {actual}, expected {expected} "
                "(corrupted or replaced; run `lpa fetch-models` to fetch it again)"
            )
        return path
