"""Resume without loss, the journal, and fault isolation, on a real server (port 0).

A TCP proxy between client and server cuts the connection mid-utterance (no close frame); the
CLI client library resumes and the final transcript must equal the uninterrupted run's. The
speech is real (/work/shared/speech, skipped where absent) and the engine is the deterministic
fake, whose words depend only on the audio: any difference is audio lost or doubled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from patchstream.clients.stream_client import StreamOptions, StreamResult, stream_file
from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import JournalConfig, LimitsConfig, SchedulerConfig, ServerConfig
from patchstream.streaming.server import Server
from tests.streaming.faults import CuttableProxy, FailingEngine
from tests.streaming.test_server import PCM_START, of_type, run_session, tone_pcm, until_ended

SPEECH = Path("/work/shared/speech/ls_2412-153948-0000.wav")  # 11.7 s of read speech
needs_speech = pytest.mark.skipif(not SPEECH.exists(), reason="the development speech set is not here")


def config(tmp_path: Path, **overrides) -> ServerConfig:
    return ServerConfig(
        port=0,
        limits=LimitsConfig(),
        scheduler=SchedulerConfig(stats_interval_s=0.1),
        shutdown_grace_s=2.0,
        resume_grace_s=10.0,
        journal=JournalConfig(tmp_path / "journal"),
        **overrides,
    )


def words(result: StreamResult) -> list[tuple[str, float, float]]:
    return [(w["text"], w["start"], w["end"]) for final in result.finals for w in final["words"]]


def http_get(port: int, path: str, key: str | None = None) -> tuple[int, dict | str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read().decode(), error.code
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


async def get(port: int, path: str, key: str | None = None):
    return await asyncio.get_running_loop().run_in_executor(None, http_get, port, path, key)


@needs_speech
async def test_a_drop_mid_utterance_and_resume_gives_the_uninterrupted_transcript(tmp_path):
    options = StreamOptions(url="", fast=True, fast_max_ahead_s=1.0)
    async with Server(config(tmp_path), build_engine(EngineChoice("fake"))) as server:
        whole = await stream_file(SPEECH, StreamOptions(url=server.url, fast=True), lambda event: None)
        async with CuttableProxy(server.port) as proxy:
            cuts = []

            def cut_mid_utterance(received) -> None:
                # Twice, each time while a caption is open (a partial just arrived).
                if received.type == "caption.partial" and received.fields["end"] > 3.0 * (len(cuts) + 1) and len(cuts) < 2:
                    cuts.append(received.fields["end"])
                    proxy.cut()

            events = []
            resumed = await asyncio.wait_for(
                stream_file(SPEECH, dataclasses.replace(options, url=proxy.url()),
                            lambda e: (events.append(e), cut_mid_utterance(e))),
                60,
            )
    assert len(cuts) == 2, "the connection was never cut mid-utterance"
    assert sum(e.type == "resumed" for e in events) == 2
    assert words(whole) and words(resumed) == words(whole)
    assert resumed.ended["audio_received_s"] == whole.ended["audio_received_s"]
    # None twice. Where captions break depends on how steps batch the audio (arrival timing, not
    # the resume): under load the same words came as 11 captions instead of 10, so ids are unique,
    # in order, and the words (checked above) are the uninterrupted run's.
    ids = [f["caption_id"] for f in resumed.finals]
    assert len(ids) == len(set(ids)) and ids == sorted(ids, key=lambda i: int(i[1:]))


async def test_a_resume_with_a_wrong_token_is_refused_and_the_session_still_waits(tmp_path):
    async with Server(config(tmp_path), build_engine(EngineChoice("fake"))) as server:
        async with CuttableProxy(server.port) as proxy:
            ws = await connect(proxy.url())
            await ws.send(json.dumps(PCM_START))
            ready = json.loads(await ws.recv())
            await ws.send(tone_pcm(1.5))
            while (event := json.loads(await ws.recv()))["type"] != "stats" or event["audio_received_s"] < 1.4:  # whole 40 ms chunks
                pass  # the audio has arrived: the resume must not ask for it again
            proxy.cut()
            base = f"{server.url}?resume={ready['session_id']}"
            async with connect(f"{base}&resume_token=wrong&finals_received=0") as bad:
                refused = await until_ended(bad)
            assert refused[0]["code"] == "resume_failed" and refused[0]["fatal"]
            async with connect(f"{base}&resume_token={ready['resume_token']}&finals_received=0") as good:
                first = json.loads(await good.recv())
                assert first["type"] == "resumed" and first["audio_bytes_received"] == len(tone_pcm(1.5))
                await good.send(json.dumps({"type": "stop"}))
                rest = await until_ended(good)
            assert rest[-1]["reason"] == "stop" and of_type([first, *rest], "caption.final")


async def test_finished_transcripts_survive_a_server_restart_and_need_the_same_key(tmp_path):
    async with Server(config(tmp_path), build_engine(EngineChoice("fake"))) as server:
        events = await run_session(server.url, tone_pcm(3.0))
    session_id = events[0]["session_id"]
    sent = [e["text"] for e in of_type(events, "caption.final")]
    async with Server(config(tmp_path), build_engine(EngineChoice("fake"))) as restarted:
        status, transcript = await get(restarted.port, f"/v1/transcripts/{session_id}")
        assert status == 200 and transcript["status"] == "ended" and transcript["ended_reason"] == "stop"
        assert [f["text"] for f in transcript["finals"]] == sent and transcript["text"] == " ".join(sent)
        assert (await get(restarted.port, "/v1/transcripts/s-0000000000000000"))[0] == 404
        assert (await get(restarted.port, "/v1/transcripts/..%2F..%2Fetc%2Fpasswd"))[0] == 404


async def test_an_abandoned_session_is_finished_into_the_journal(tmp_path):
    cfg = dataclasses.replace(config(tmp_path), resume_grace_s=0.3)
    async with Server(cfg, build_engine(EngineChoice("fake"))) as server:
        ws = await connect(server.url)
        await ws.send(json.dumps(PCM_START))
        ready = json.loads(await ws.recv())
        await ws.send(tone_pcm(2.0))
        await asyncio.sleep(0.3)
        ws.transport.abort()
        for _ in range(100):
            status, transcript = await get(server.port, f"/v1/transcripts/{ready['session_id']}")
            if status == 200 and transcript["status"] == "ended":
                break
            await asyncio.sleep(0.1)
    assert transcript["ended_reason"] == "disconnected"
    assert transcript["text"] == "w0 w1"  # both bursts reached a final, though nobody was listening


async def test_an_engine_failure_in_one_session_leaves_the_others_captions_flowing(tmp_path):
    async with Server(config(tmp_path), FailingEngine()) as server:
        doomed_start = {**PCM_START, "prompt": "explode"}
        doomed, healthy = await asyncio.wait_for(
            asyncio.gather(run_session(server.url, tone_pcm(3.0), start=doomed_start),
                           run_session(server.url, tone_pcm(3.0))),
            30,
        )
    error = of_type(doomed, "error")[0]
    assert error["code"] == "engine_error" and error["fatal"] and doomed[-1]["reason"] == "error"
    assert [f["text"] for f in of_type(healthy, "caption.final")] == ["w0", "w1", "w2."]
    assert healthy[-1]["reason"] == "stop"


async def test_shutdown_flushes_live_and_detached_sessions_into_the_journal(tmp_path):
    server = Server(config(tmp_path), build_engine(EngineChoice("fake")))
    async with server:
        live = await connect(server.url)
        gone = await connect(server.url)
        ids = []
        for ws in (live, gone):
            await ws.send(json.dumps(PCM_START))
            ids.append(json.loads(await ws.recv())["session_id"])
            await ws.send(tone_pcm(2.0))
        while not all(s.protocol.audio_bytes_received == len(tone_pcm(2.0)) for s in server._sessions.values()):
            await asyncio.sleep(0.02)
        gone.transport.abort()  # detached, waiting for a resume, when the server stops
        while not any(s.protocol.detached for s in server._sessions.values()):
            await asyncio.sleep(0.02)
    events = await until_ended(live)
    assert any(e.get("code") == "shutting_down" for e in events) and events[-1]["reason"] == "shutdown"
    async with Server(config(tmp_path), build_engine(EngineChoice("fake"))) as restarted:
        for session_id in ids:
            status, transcript = await get(restarted.port, f"/v1/transcripts/{session_id}")
            assert status == 200 and transcript["ended_reason"] == "shutdown" and transcript["text"] == "w0 w1"
