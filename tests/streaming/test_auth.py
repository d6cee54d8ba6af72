"""Auth: the one credential check (unit) and every endpoint guarded by it (real server)."""

from __future__ import annotations

import asyncio
import dataclasses
import http
import json
import logging
import ssl
import subprocess
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from patchstream.clients.stream_client import StreamOptions, stream_file, write_wav
from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.auth import (
    ApiKey,
    AuthConfig,
    AuthError,
    AuthRequest,
    Authenticator,
    check_bind,
    load_keys_file,
    mint_token,
    parse_key,
    redact,
)
from patchstream.streaming.config import JournalConfig, SchedulerConfig, ServerConfig
from patchstream.streaming.server import Server
from tests.streaming.test_resume import get
from tests.streaming.test_server import PCM_START, of_type, run_session, tone_pcm, until_ended

ALICE = ApiKey("alice", "alice-secret-0123456789", max_sessions=1)
BOB = ApiKey("bob", "bob-secret-0123456789ab")
AUTH = AuthConfig(keys=(ALICE, BOB), allowed_origins=("https://app.example",))
NOW = 1_800_000_000.0


def check(path="/v1/stream", now=NOW, **headers):
    return Authenticator(AUTH).check(AuthRequest(path, headers, now))


# --- the check itself -----------------------------------------------------------------------------

def test_an_api_key_in_the_header_names_its_principal():
    assert check(Authorization=f"Bearer {BOB.secret}").key_id == "bob"
    assert check(authorization=f"bearer {ALICE.secret}").max_sessions == 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope-nope-nope-nope"}, {"Authorization": "Basic abc"},
                                     {"Authorization": f"Bearer {ALICE.secret}x"}, {"Authorization": "Bearer "}])
def test_missing_or_wrong_credentials_are_refused(headers):
    with pytest.raises(AuthError) as refused:
        check(**headers)
    assert refused.value.status == http.HTTPStatus.UNAUTHORIZED and refused.value.code == "unauthorized"


def test_a_signed_token_works_in_the_query_until_it_expires():
    token = mint_token(ALICE, ttl_s=60, now=NOW)
    assert check(f"/v1/stream?access_token={token}").key_id == "alice"
    assert check(Authorization=f"Bearer {token}").key_id == "alice"
    with pytest.raises(AuthError, match="expired"):
        check(f"/v1/stream?access_token={token}", now=NOW + 61)


def test_a_forged_or_foreign_token_is_refused():
    key_id, expiry, signature = mint_token(ALICE, ttl_s=60, now=NOW).split(".")
    for forged in (f"bob.{expiry}.{signature}", f"{key_id}.{int(expiry) + 3600}.{signature}",
                   f"{key_id}.{expiry}.{signature[:-2]}AA", f"carol.{expiry}.{signature}",
                   mint_token(ApiKey("alice", "another-secret-0123456"), 60, NOW)):
        with pytest.raises(AuthError):
            check(f"/?access_token={forged}")


def test_a_raw_api_key_in_the_query_is_refused_because_urls_get_logged():
    with pytest.raises(AuthError, match="never an API key"):
        check(f"/v1/stream?access_token={ALICE.secret}")


def test_origins_are_checked_with_or_without_keys():
    key = {"Authorization": f"Bearer {BOB.secret}"}
    assert check(Origin="https://app.example", **key).key_id == "bob"
    assert check(Origin="http://127.0.0.1:8765", Host="127.0.0.1:8765", **key).key_id == "bob"  # its own page
    with pytest.raises(AuthError) as refused:
        check(Origin="https://evil.example", **key)
    assert refused.value.status == http.HTTPStatus.FORBIDDEN and refused.value.code == "forbidden_origin"
    with pytest.raises(AuthError):
        Authenticator(AuthConfig()).check(AuthRequest("/", {"Origin": "https://evil.example", "Host": "127.0.0.1:1"}))
    assert Authenticator(AuthConfig()).check(AuthRequest("/")).key_id == "anonymous"


def test_a_keyless_server_may_only_listen_on_loopback_unless_told():
    check_bind(AuthConfig(), "127.0.0.1")
    check_bind(AUTH, "0.0.0.0")
    check_bind(AuthConfig(loopback_only_when_open=False), "0.0.0.0")
    with pytest.raises(ValueError, match="--no-auth"):
        check_bind(AuthConfig(), "0.0.0.0")


def test_keys_come_from_flags_and_files_and_short_secrets_are_refused(tmp_path):
    assert parse_key("ci:abcdefghijklmnop") == ApiKey("ci", "abcdefghijklmnop")
    for bad in ("nocolon", "ci:short", "bad id:abcdefghijklmnop", "ci:abcdefgh.ijklmnop"):
        with pytest.raises(ValueError):
            parse_key(bad)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"id": "web", "secret": "w" * 20, "max_sessions": 2, "max_media_minutes": 5}]}))
    assert load_keys_file(path) == (ApiKey("web", "w" * 20, 2, 5),)


def test_redact_removes_every_credential_form():
    line = f"GET /v1/stream?access_token=a.1.sig&resume=s-1&resume_token=RTOKEN HTTP/1.1 Authorization: Bearer {BOB.secret}"
    assert "a.1.sig" not in redact(line) and "RTOKEN" not in redact(line) and BOB.secret not in redact(line)
    assert BOB.secret not in redact(f"header Bearer {BOB.secret}, more")
    assert "resume=s-1" in redact(line)


# --- the running server ---------------------------------------------------------------------------

def config(tmp_path: Path, **overrides) -> ServerConfig:
    base = ServerConfig(port=0, auth=AUTH, scheduler=SchedulerConfig(stats_interval_s=0.2),
                        journal=JournalConfig(tmp_path / "journal"), shutdown_grace_s=2.0)
    return dataclasses.replace(base, **overrides)


def bearer(key: ApiKey) -> dict:
    return {"Authorization": f"Bearer {key.secret}"}


async def refused_status(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, **kwargs):
            pass
    return refused.value.response.status_code


async def test_the_server_refuses_missing_wrong_expired_credentials_and_bad_origins(tmp_path):
    async with Server(config(tmp_path), build_engine(EngineChoice("fake"))) as server:
        expired = mint_token(BOB, ttl_s=1, now=1_000_000.0)
        assert await refused_status(server.url) == 401
        assert await refused_status(server.url, additional_headers={"Authorization": "Bearer wrong-wrong-wrong"}) == 401
        assert await refused_status(f"{server.url}?access_token={expired}") == 401
        assert await refused_status(server.url, origin="https://evil.example", additional_headers=bearer(BOB)) == 403
        assert (await get(server.port, "/metrics"))[0] == 401
        assert (await get(server.port, "/healthz"))[0] == 200  # probes need no credential
        token = mint_token(BOB, ttl_s=60)
        async with connect(f"{server.url}?access_token={token}", origin="https://app.example") as ws:
            await ws.send(json.dumps(PCM_START))
            assert json.loads(await ws.recv())["type"] == "ready"
        status, metrics = await get(server.port, "/metrics", BOB.secret)
        assert status == 200 and 'patchstream_errors_total{code="unauthorized"} 4.0' in metrics  # 3 + /metrics
        assert 'patchstream_errors_total{code="forbidden_origin"} 1.0' in metrics


async def test_one_key_cannot_read_or_resume_another_keys_session(tmp_path):
    async with Server(config(tmp_path), build_engine(EngineChoice("fake"))) as server:
        ws = await connect(server.url, additional_headers=bearer(ALICE))
        await ws.send(json.dumps(PCM_START))
        ready = json.loads(await ws.recv())
        await ws.send(tone_pcm(2.0))
        resume = f"{server.url}?resume={ready['session_id']}&resume_token={ready['resume_token']}"
        async with connect(resume, additional_headers=bearer(BOB)) as stranger:
            assert (await until_ended(stranger))[0]["code"] == "resume_failed"
        await ws.send(json.dumps({"type": "stop"}))
        events = await until_ended(ws)
        await ws.close()
        path = f"/v1/transcripts/{ready['session_id']}"
        assert (await get(server.port, path, BOB.secret))[0] == 404
        status, transcript = await get(server.port, path, ALICE.secret)
        assert status == 200 and [f["text"] for f in transcript["finals"]] == [f["text"] for f in of_type(events, "caption.final")]


async def test_a_key_over_its_session_limit_gets_quota_exceeded_at_start(tmp_path):
    async with Server(config(tmp_path), build_engine(EngineChoice("fake"))) as server:
        async with connect(server.url, additional_headers=bearer(ALICE)) as first:
            await first.send(json.dumps(PCM_START))
            assert json.loads(await first.recv())["type"] == "ready"
            async with connect(server.url, additional_headers=bearer(ALICE)) as second:
                await second.send(json.dumps(PCM_START))
                events = await until_ended(second)
            assert events[0]["code"] == "quota_exceeded" and events[0]["fatal"]
            async with connect(server.url, additional_headers=bearer(BOB)) as other:  # other keys are not limited by it
                await other.send(json.dumps(PCM_START))
                assert json.loads(await other.recv())["type"] == "ready"


async def test_media_minutes_of_a_key_bound_its_sessions(tmp_path):
    short = ApiKey("short", "short-secret-0123456789", max_media_minutes=1.5 / 60)
    async with Server(config(tmp_path, auth=AuthConfig(keys=(short,))), build_engine(EngineChoice("fake"))) as server:
        async with connect(server.url, additional_headers=bearer(short)) as ws:
            await ws.send(json.dumps(PCM_START))
            await ws.send(tone_pcm(3.0))
            events = await until_ended(ws)
        assert of_type(events, "error")[0]["code"] == "session_limit"
        while server.active_sessions:  # the session is charged when it has closed
            await asyncio.sleep(0.02)
        async with connect(server.url, additional_headers=bearer(short)) as ws:
            await ws.send(json.dumps(PCM_START))
            assert (await until_ended(ws))[0]["code"] == "quota_exceeded"


async def test_no_credential_ever_reaches_a_log(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    token = mint_token(BOB, ttl_s=60)
    async with Server(config(tmp_path), build_engine(EngineChoice("fake"))) as server:
        async with connect(f"{server.url}?access_token={token}") as ws:
            await ws.send(json.dumps(PCM_START))
            ready = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "stop"}))
            await until_ended(ws)
        async with connect(server.url, additional_headers=bearer(ALICE)) as ws:
            await ws.send(json.dumps(PCM_START))
            await until_ended(await _stop(ws))
        await refused_status(server.url, additional_headers={"Authorization": f"Bearer {ALICE.secret}x"})
        await refused_status(f"{server.url}?access_token={ALICE.secret}")
        await get(server.port, "/metrics", BOB.secret)
    # The server's records (this test's own websocket client logs its requests too).
    server_records = [r for r in caplog.records if r.name.startswith(("patchstream", "websockets.server"))]
    text = "\n".join(f"{record.getMessage()} {record.args}" for record in server_records)
    assert "GET /v1/stream" in text and "Authorization: ***" in text  # the library's debug lines were captured
    for secret in (token, token.rsplit(".", 1)[1], ALICE.secret, BOB.secret, ready["resume_token"]):
        assert secret not in text


async def _stop(ws):
    await ws.send(json.dumps({"type": "stop"}))
    return ws


@pytest.mark.skipif(subprocess.run(["which", "openssl"], capture_output=True).returncode != 0, reason="needs openssl")
async def test_with_a_certificate_the_server_speaks_tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    client = ssl.create_default_context(cafile=str(cert))
    wav = tmp_path / "tone.wav"
    import numpy as np  # noqa: PLC0415

    write_wav(wav, np.frombuffer(tone_pcm(2.0), "<i2").astype(np.float32) / 32768)
    async with Server(config(tmp_path, certfile=str(cert), keyfile=str(key)), build_engine(EngineChoice("fake"))) as server:
        assert server.url.startswith("wss://")
        async with connect(server.url, ssl=client, additional_headers=bearer(BOB)) as ws:
            await ws.send(json.dumps(PCM_START))
            assert json.loads(await ws.recv())["type"] == "ready"
        with pytest.raises(Exception):  # noqa: B017 - plain text to a TLS port fails one way or another
            async with connect(server.url.replace("wss://", "ws://"), additional_headers=bearer(BOB), open_timeout=3):
                pass
