"""The server end to end on a real websocket (port 0) with the fake engine.

Covers the happy path and the issue's bad-input list: a binary frame before `start`, an unknown
encoding, garbage declared as Ogg/Opus, a 50 MB frame, a client that vanishes mid-utterance and a
client that never reads — each with other sessions running beside it, unaffected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import urllib.request
from fractions import Fraction

import av
import numpy as np
import pytest
from websockets.asyncio.client import connect

from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import LimitsConfig, SchedulerConfig, ServerConfig
from patchstream.streaming.server import Server

RATE = 16_000
PCM_START = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": RATE, "channels": 1}}


def tone_pcm(seconds: float, rate: int = RATE, gap_every_s: float = 1.0) -> bytes:
    """A 440 Hz tone cut by short silences, so a fake engine sees several 'words'."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t)
    wave[(t % gap_every_s) > gap_every_s * 0.7] = 0.0
    return (wave * 32767).astype("<i2").tobytes()


def server_config(**limits) -> ServerConfig:
    return ServerConfig(
        port=0,
        limits=LimitsConfig(**limits),
        scheduler=SchedulerConfig(stats_interval_s=0.2),
        shutdown_grace_s=2.0,
        resume_grace_s=0.5,  # a vanished client's session waits this long for a resume, then ends
    )


@pytest.fixture
async def server():
    async with Server(server_config(), build_engine(EngineChoice("fake"))) as running:
        yield running


async def run_session(url: str, pcm: bytes, frame_bytes: int = 3_200, start=PCM_START, before=()):
    """Stream `pcm` as fast as possible, send stop, return every event until `ended`."""
    async with connect(url, max_size=None) as ws:
        for message in before:
            await ws.send(message)
        await ws.send(json.dumps(start))
        for offset in range(0, len(pcm), frame_bytes):
            await ws.send(pcm[offset : offset + frame_bytes])
        await ws.send(json.dumps({"type": "stop"}))
        return await until_ended(ws)


async def until_ended(ws) -> list[dict]:
    """Every event the server sends up to and including `ended`."""
    events = []
    async for message in ws:
        events.append(json.loads(message))
        if events[-1]["type"] == "ended":
            break
    return events


def of_type(events, kind):
    return [event for event in events if event["type"] == kind]


async def test_session_gets_ready_captions_and_ended(server):
    events = await asyncio.wait_for(run_session(server.url, tone_pcm(4.0)), 30)
    assert events[0]["type"] == "ready" and events[0]["sample_rate"] == RATE
    finals = of_type(events, "caption.final")
    assert finals, events
    ids = [final["caption_id"] for final in finals]
    assert len(set(ids)) == len(ids)
    for final in finals:
        assert 0.0 <= final["start"] <= final["end"] <= 4.0 + 0.05
        assert all(word["stable"] for word in final["words"])
    assert [final["start"] for final in finals] == sorted(final["start"] for final in finals)
    ended = events[-1]
    assert ended["type"] == "ended" and ended["reason"] == "stop"
    assert ended["captions"] == len(finals)
    assert ended["audio_received_s"] == pytest.approx(4.0, abs=0.05)


async def test_media_time_does_not_depend_on_frame_sizes(server):
    pcm = tone_pcm(3.0)
    small = await run_session(server.url, pcm, frame_bytes=333)
    large = await run_session(server.url, pcm, frame_bytes=64_000)
    def times(events):
        return [(w["text"], w["start"], w["end"]) for f in of_type(events, "caption.final") for w in f["words"]]
    assert times(small) == times(large)


async def test_binary_before_start_is_an_error_but_the_session_goes_on(server):
    events = await run_session(server.url, tone_pcm(2.0), before=[b"\x00\x01" * 100])
    assert events[0] == {**events[0], "type": "error", "code": "not_started", "fatal": False}
    assert of_type(events, "ready") and of_type(events, "caption.final")
    assert events[-1]["reason"] == "stop"


async def test_unknown_encoding_ends_the_session_with_a_clear_error(server):
    start = {"type": "start", "audio": {"encoding": "pcm_s24be", "sample_rate": RATE, "channels": 1}}
    events = await run_session(server.url, b"", start=start)
    error = of_type(events, "error")[0]
    assert error["code"] == "unsupported_encoding" and error["fatal"] and "pcm_s24be" in error["message"]
    assert events[-1] == {**events[-1], "type": "ended", "reason": "error"}


async def test_garbage_declared_as_ogg_fails_alone_while_another_session_succeeds(server):
    garbage_start = {"type": "start", "audio": {"encoding": "container", "container": "ogg"}}
    garbage = np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    bad, good = await asyncio.wait_for(
        asyncio.gather(
            run_session(server.url, garbage, frame_bytes=4_096, start=garbage_start),
            run_session(server.url, tone_pcm(3.0)),
        ),
        30,
    )
    error = of_type(bad, "error")[0]
    assert error["code"] == "decode_failed" and error["fatal"]
    assert bad[-1]["reason"] == "error"
    assert of_type(good, "caption.final") and good[-1]["reason"] == "stop"


async def test_fifty_megabyte_frame_is_rejected_and_the_session_survives(server):
    async with connect(server.url, max_size=None) as ws:
        await ws.send(json.dumps(PCM_START))
        await ws.send(b"\x00" * (50 * 1024 * 1024))
        await ws.send(tone_pcm(2.0))  # under 1 MiB: accepted
        await ws.send(json.dumps({"type": "stop"}))
        events = await until_ended(ws)
    error = of_type(events, "error")[0]
    assert error["code"] == "frame_too_large" and not error["fatal"]
    assert of_type(events, "caption.final") and events[-1]["reason"] == "stop"
    assert events[-1]["audio_received_s"] == pytest.approx(2.0, abs=0.05)


async def test_client_vanishing_mid_utterance_frees_its_session(server):
    ws = await connect(server.url)
    await ws.send(json.dumps(PCM_START))
    await ws.send(tone_pcm(1.5))
    await ws.recv()  # ready
    ws.transport.abort()  # no close frame, no stop: the client is simply gone
    good = await asyncio.wait_for(run_session(server.url, tone_pcm(2.0)), 30)
    assert good[-1]["reason"] == "stop" and of_type(good, "caption.final")
    for _ in range(100):
        if server.active_sessions == 0:
            break
        await asyncio.sleep(0.05)
    assert server.active_sessions == 0
    assert not server.scheduler._slots  # the engine state of the vanished session was freed


async def test_client_that_never_reads_is_dropped_without_hurting_others():
    config = server_config(max_pending_finals=50, send_timeout_s=1.0)
    async with Server(config, build_engine(EngineChoice("fake"))) as server:
        # max_queue=1: the client library stops reading the socket once one message waits.
        silent = await connect(server.url, max_queue=1, write_limit=1 << 20)
        await silent.send(json.dumps(PCM_START))
        # Every unknown message earns an undroppable error event of about 4 kB.
        flood = json.dumps({"type": "x" * 4_000})
        for _ in range(4_000):
            await silent.send(flood)
        good = await asyncio.wait_for(run_session(server.url, tone_pcm(2.0)), 30)
        assert good[-1]["reason"] == "stop" and of_type(good, "caption.final")
        for _ in range(200):
            if server.active_sessions == 0:
                break
            await asyncio.sleep(0.05)
        assert server.active_sessions == 0, "the session of the client that never reads was not closed"
        silent.transport.abort()


async def test_sessions_over_the_limit_get_server_busy():
    async with Server(server_config(max_sessions=1), build_engine(EngineChoice("fake"))) as server:
        async with connect(server.url) as first:
            await first.send(json.dumps(PCM_START))
            assert json.loads(await first.recv())["type"] == "ready"
            async with connect(server.url) as second:
                error = json.loads(await second.recv())
                assert error["code"] == "server_busy" and error["fatal"]


async def test_start_timeout_and_bad_json_before_start():
    async with Server(server_config(start_timeout_s=0.3), build_engine(EngineChoice("fake"))) as server:
        async with connect(server.url) as ws:
            await ws.send("{not json")
            first = json.loads(await ws.recv())
            second = json.loads(await ws.recv())
            assert first["code"] == "bad_json" and not first["fatal"]
            assert second["code"] == "start_timeout" and second["fatal"]


async def test_stats_report_received_and_processed_audio(server):
    async with connect(server.url) as ws:
        await ws.send(json.dumps(PCM_START))
        pcm = tone_pcm(2.0)
        step = 3_200  # 100 ms
        for offset in range(0, len(pcm), step):
            await ws.send(pcm[offset : offset + step])
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        await ws.send(json.dumps({"type": "stop"}))
        events = await until_ended(ws)
    stats = of_type(events, "stats")
    assert stats
    last = stats[-1]
    assert last["audio_received_s"] == pytest.approx(2.0, abs=0.05)
    assert 0.0 <= last["lag_s"] <= last["audio_received_s"]
    assert last["dropped_audio_s"] == 0.0


async def test_health_endpoint_and_unknown_path(server):
    base = f"http://127.0.0.1:{server.port}"
    loop = asyncio.get_running_loop()
    body = await loop.run_in_executor(None, lambda: urllib.request.urlopen(f"{base}/healthz", timeout=5).read())
    assert body == b"ok\n"
    with pytest.raises(urllib.error.HTTPError) as error:
        await loop.run_in_executor(None, lambda: urllib.request.urlopen(f"{base}/nope", timeout=5))
    assert error.value.code == 404
    error.value.close()  # an open error response would keep the connection (and shutdown) waiting


async def test_shutdown_flushes_finals_to_live_sessions():
    server = Server(server_config(), build_engine(EngineChoice("fake")))
    await server.__aenter__()
    async with connect(server.url) as ws:
        await ws.send(json.dumps(PCM_START))
        await ws.send(tone_pcm(2.0))
        await asyncio.sleep(0.3)
        shutdown = asyncio.create_task(server.shutdown())
        events = await until_ended(ws)
        await shutdown
    assert of_type(events, "error")[-1]["code"] == "shutting_down"
    assert events[-1]["reason"] == "shutdown"
    assert of_type(events, "caption.final")


async def test_malformed_second_start_is_rejected_without_ending_the_session(server):
    second = json.dumps({"type": "start", "audio": {"encoding": "opus"}})
    async with connect(server.url) as ws:
        await ws.send(json.dumps(PCM_START))
        await ws.send(tone_pcm(1.0))
        await ws.send(second)
        await ws.send(tone_pcm(1.0))
        await ws.send(json.dumps({"type": "stop"}))
        events = await until_ended(ws)
    error = of_type(events, "error")[0]
    assert error["code"] == "unsupported_encoding" and not error["fatal"]
    assert events[-1]["reason"] == "stop" and events[-1]["audio_received_s"] == pytest.approx(2.0, abs=0.05)


async def test_idle_timeout_still_delivers_committed_words_as_finals():
    async with Server(server_config(idle_timeout_s=0.6), build_engine(EngineChoice("fake"))) as server:
        async with connect(server.url) as ws:
            await ws.send(json.dumps(PCM_START))
            # A word that commits, then one still sounding when the client goes quiet.
            await ws.send(tone_pcm(0.5) + bytes(int(0.3 * RATE) * 2) + tone_pcm(0.3))
            events = await until_ended(ws)
    stable = {w["text"] for e in of_type(events, "caption.partial") for w in e["words"] if w["stable"]}
    finals = {w["text"] for e in of_type(events, "caption.final") for w in e["words"]}
    assert stable and stable <= finals
    assert of_type(events, "error")[-1]["code"] == "idle_timeout"
    assert events[-1]["reason"] == "idle"


class _FailingFeedEngine:
    """The fake engine, except that feeding the session whose prompt is 'boom' raises."""

    def __init__(self):
        self._inner = build_engine(EngineChoice("fake"))
        self.spec = self._inner.spec
        self._doomed = set()

    def open(self, options):
        state = self._inner.open(options)
        if options.prompt == "boom":
            self._doomed.add(id(state))
        return state

    def feed(self, state, chunk):
        if id(state) in self._doomed:
            raise RuntimeError("feed failed")
        self._inner.feed(state, chunk)

    def step(self, states):
        return self._inner.step(states)

    def finish(self, state):
        return self._inner.finish(state)

    def close(self, state):
        self._inner.close(state)


async def test_an_engine_failure_on_one_session_spares_the_sessions_batched_with_it():
    async with Server(server_config(), _FailingFeedEngine()) as server:
        doomed_start = {**PCM_START, "prompt": "boom"}
        bad, good = await asyncio.wait_for(
            asyncio.gather(
                run_session(server.url, tone_pcm(2.0), start=doomed_start),
                run_session(server.url, tone_pcm(2.0)),
            ),
            30,
        )
    assert of_type(bad, "error")[0]["code"] == "engine_error" and bad[-1]["reason"] == "error"
    assert not of_type(good, "error") and of_type(good, "caption.final") and good[-1]["reason"] == "stop"


async def test_shutdown_before_start_tells_the_client_at_once():
    # A grace period far longer than the test may run: a session that waited for it instead of
    # ending at once would be cancelled at its end and send nothing.
    config = dataclasses.replace(server_config(), shutdown_grace_s=3_600.0)
    server = Server(config, build_engine(EngineChoice("fake")))
    await server.__aenter__()
    async with connect(server.url) as ws:
        while not server.active_sessions:  # the session exists: the connection was admitted
            await asyncio.sleep(0.01)
        shutdown = asyncio.create_task(server.shutdown())
        events = [json.loads(message) async for message in ws]
        await shutdown
    assert events[0]["code"] == "shutting_down" and events[-1]["reason"] == "shutdown"


async def test_container_timestamps_count_from_zero(server):
    # An Ogg/Opus stream whose first timestamp is 5 s: captions still start near 0.
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48_000)
        stream.layout = "mono"
        t = np.arange(48_000 * 2) / 48_000
        wave = (0.3 * np.sin(2 * np.pi * 440 * t) * ((t % 1.0) < 0.7)).astype(np.float32)
        for index, offset in enumerate(range(0, len(wave), 960)):
            frame = av.AudioFrame.from_ndarray(wave[None, offset : offset + 960], format="flt", layout="mono")
            frame.sample_rate = 48_000
            frame.pts = 5 * 48_000 + index * 960
            frame.time_base = Fraction(1, 48_000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    start = {"type": "start", "audio": {"encoding": "container", "container": "ogg"}}
    events = await run_session(server.url, buffer.getvalue(), frame_bytes=2_000, start=start)
    finals = of_type(events, "caption.final")
    assert finals and finals[0]["start"] < 0.5
    assert events[-1]["audio_received_s"] == pytest.approx(2.0, abs=0.1)
