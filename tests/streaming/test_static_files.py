"""The browser page served by the server: `GET /` and its modules from memory, nothing else of
the disk; and the same server over TLS (https:// page, wss:// session)."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.server import Server
from patchstream.streaming.static_files import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[2] / "clients" / "web"


def test_the_page_directory_is_read_once_with_content_types():
    files = StaticFiles(WEB_DIR)
    assert files.lookup("/") is files.lookup("/index.html")
    assert files.lookup("/app.js?v=2").content_type == "text/javascript; charset=utf-8"
    assert files.lookup("/style.css").content_type.startswith("text/css")
    for path in ("/../pyproject.toml", "/%2e%2e/cli.py", "/web/app.js", "/nope.js", "//etc/passwd"):
        assert files.lookup(path) is None, path


def test_every_module_the_page_imports_is_served():
    files = StaticFiles(WEB_DIR)
    for path, served in files.files.items():
        if path.endswith(".js"):
            for name in __import__("re").findall(r'from "\./([\w-]+\.js)"', served.body.decode()):
                assert files.lookup(f"/{name}") is not None, (path, name)
    assert files.lookup("/pcm-worklet.js") is not None  # loaded by addModule, not by import


async def fetch(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str, bytes]:
    def get():
        try:
            with urllib.request.urlopen(url, timeout=10, context=context) as response:  # noqa: S310 - our test server
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()

    return await asyncio.get_running_loop().run_in_executor(None, get)


async def test_the_server_serves_the_page_beside_the_stream_and_health():
    config = ServerConfig(port=0, web_dir=str(WEB_DIR))
    async with Server(config, build_engine(EngineChoice("fake"))) as server:
        status, kind, body = await fetch(server.page_url)
        assert status == 200 and kind.startswith("text/html") and b"patchstream" in body
        assert (await fetch(server.page_url + "transcript.js"))[0] == 200
        assert (await fetch(server.page_url + "missing.js"))[0] == 404
        assert (await fetch(server.page_url + "healthz"))[0] == 200
    async with Server(ServerConfig(port=0), build_engine(EngineChoice("fake"))) as server:
        assert (await fetch(server.page_url))[0] == 404  # no web_dir: no page


def self_signed(folder: Path) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415
    import ipaddress  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return certfile, keyfile


async def test_with_a_certificate_the_page_is_https_and_the_session_wss(tmp_path):
    certfile, keyfile = self_signed(tmp_path)
    config = ServerConfig(port=0, web_dir=str(WEB_DIR), certfile=str(certfile), keyfile=str(keyfile))
    client = ssl.create_default_context(cafile=str(certfile))
    async with Server(config, build_engine(EngineChoice("fake"))) as server:
        assert server.page_url.startswith("https://") and server.url.startswith("wss://")
        assert (await fetch(server.page_url, client))[0] == 200
        async with connect(server.url, ssl=client) as ws:
            await ws.send(json.dumps({"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}}))
            assert json.loads(await ws.recv())["type"] == "ready"
