"""The go-livepeer double packaged as a go-livepeer release: ``livepeer-linux-amd64.tar.gz``. Not go-livepeer.

The tarball is laid out as go-livepeer's releases are (``livepeer-linux-amd64/livepeer``) so provisioning fetches,
verifies (sha256) and unpacks it exactly as it would a real release. Inside:
- ``livepeer-linux-amd64/livepeer`` (0755): ``tests/doubles/orchestrator.py`` behind ``#!/usr/bin/env python3``,
  the double of go-livepeer's binary (Python standard library only: a node's bare ``python3`` runs it);
- ``livepeer-linux-amd64/README-DOUBLE.txt`` (0644): says what this is.

The build is deterministic: fixed member order, mtimes, owners and modes, a USTAR archive and a gzip header
without name or time, so the same source gives the same bytes and the same sha256 on every build.

    python -m tests.doubles.release OUT_DIR     prints the tarball's path, then its sha256 (run from the repo root)

It also writes ``OUT_DIR/livepeer-linux-amd64.tar.gz.sha256`` in ``sha256sum`` format.
Standard library only, like the double.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

NAME = "livepeer-linux-amd64"
TARBALL = f"{NAME}.tar.gz"
MTIME = 1_735_689_600  # 2025-01-01T00:00:00Z: fixed (GNU tar warns about 1970 time stamps)
DOUBLE = Path(__file__).resolve().parent / "orchestrator.py"
README = """\
This is NOT go-livepeer. It is a double of go-livepeer's `livepeer` binary, written in Python (standard library
only), for tests that provision a node without a real go-livepeer release (which cannot be downloaded or built on
the test machines). Source: tests/doubles/orchestrator.py in the livepeer-appliance repository; built by
tests/doubles/release.py. What it does and where it departs from go-livepeer: the docstring at the top of
`livepeer`. It needs python3 (>= 3.11) on PATH.
"""


def launcher() -> bytes:
    """The ``livepeer`` executable: the double's module behind a shebang line."""
    header = (
        "#!/usr/bin/env python3\n"
        "# A double of go-livepeer's `livepeer` binary (NOT go-livepeer): tests/doubles/orchestrator.py,\n"
        "# packaged by tests/doubles/release.py.\n"
    )
    return header.encode() + DOUBLE.read_bytes()


def _member(name: str, *, mode: int, data: bytes | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = mode, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if data is None:
        info.type = tarfile.DIRTYPE
    else:
        info.size = len(data)
    return info, data


def tarball_bytes() -> bytes:
    """The release tarball, byte for byte the same for the same source."""
    members = [
        _member(f"{NAME}/", mode=0o755),
        _member(f"{NAME}/README-DOUBLE.txt", mode=0o644, data=README.encode()),
        _member(f"{NAME}/livepeer", mode=0o755, data=launcher()),
    ]
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.USTAR_FORMAT) as archive,
    ):
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def build_release(out_dir: Path) -> tuple[Path, str]:
    """Write ``OUT_DIR/livepeer-linux-amd64.tar.gz`` (and its ``.sha256``); returns (path, sha256 hex)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = tarball_bytes()
    digest = hashlib.sha256(data).hexdigest()
    path = out_dir / TARBALL
    for target, content in ((path, data), (out_dir / f"{TARBALL}.sha256", f"{digest}  {TARBALL}\n".encode())):
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(content)
        partial.replace(target)
    return path, digest


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write("usage: python -m tests.doubles.release OUT_DIR\n")
        return 2
    path, digest = build_release(Path(argv[0]))
    sys.stdout.write(f"{path}\n{digest}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
