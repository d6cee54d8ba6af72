"""Hostile input, fuzzed (hypothesis, bounded): the sans-I/O session protocol and the running
server. Pass = no unhandled exception, every event a protocol event, every error a documented
code (tests/streaming/test_protocol_conformance.py holds the codes equal to docs/protocol.md),
and the server still serves a normal session afterwards."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from patchstream.model.api import AudioChunk, CaptionUpdate, EngineChoice, StepResult, Word
from patchstream.model.engines import build_engine
from patchstream.streaming.config import LimitsConfig, SchedulerConfig, ServerConfig
from patchstream.streaming.protocol import EVENT_TYPES, ErrorCode, ProtocolError, to_json
from patchstream.streaming.server import Server
from patchstream.streaming.session_protocol import SessionProtocol
from tests.streaming.test_server import PCM_START, run_session, tone_pcm

DOCUMENTED = {code.value for code in ErrorCode}
LIMITS = LimitsConfig(max_frame_bytes=4_096, max_image_bytes=8_192)  # small, so oversized frames are cheap
SPEC = build_engine(EngineChoice("fake")).spec

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
kinds = st.sampled_from(["start", "stop", "frame", "control", "resume", "", None, 7, "START"])
audio = st.fixed_dictionaries({}, optional={
    "encoding": st.sampled_from(["pcm_s16le", "pcm_f32le", "mulaw", "alaw", "container", "opus", 3]),
    "sample_rate": st.sampled_from([16000, 8000, 0, -1, 3.5, "16000", 10**9]),
    "channels": st.sampled_from([1, 2, 0, 9, None, "1"]),
    "container": st.sampled_from(["ogg", "webm", "hls", "concat", ""]),
})
messages = st.one_of(
    st.builds(lambda kind, extra: json.dumps({"type": kind, **extra}), kinds, st.dictionaries(
        st.sampled_from(["audio", "video", "language", "prompt", "time", "interpretations", "stats",
                         "interim_results", "task", "instruction"]), json_values, max_size=4)),
    st.builds(lambda a, extra: json.dumps({"type": "start", "audio": a, **extra}), audio,
              st.dictionaries(st.sampled_from(["video", "language", "prompt", "task"]), json_values, max_size=2)),
    st.builds(json.dumps, json_values),
    st.text(max_size=60),  # mostly not JSON
    st.builds(lambda text, cut: text[:cut], st.builds(json.dumps, st.just(PCM_START)), st.integers(0, 60)),  # truncated
    st.binary(max_size=64),
    st.integers(0, 3).map(lambda n: b"\x7f" * (LIMITS.max_frame_bytes + 1 + n)),  # oversized
)


def check_events(protocol: SessionProtocol) -> list:
    events = []
    while (event := protocol.next_event()) is not None:
        wire = json.loads(to_json(event))
        assert wire["type"] in EVENT_TYPES, wire
        if wire["type"] == "error":
            assert wire["code"] in DOCUMENTED, wire
        events.append(wire)
    return events


shell_inputs = st.one_of(
    messages.map(lambda m: ("message", m)),
    st.sampled_from(["opened", "decoded", "result", "engine_failed", "finished", "tick", "shutdown",
                     "detach", "attach", "lost", "dropped"]).map(lambda name: (name, None)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(shell_inputs, max_size=25))
def test_the_session_protocol_survives_any_input_in_any_order(inputs):
    protocol = SessionProtocol("s-fuzz", SPEC, LIMITS, 1.0, 0.0, resume_token="t", resume_grace_s=5.0)
    now = 0.0
    for kind, value in inputs:
        now += 0.7
        if kind == "message":
            (protocol.receive_bytes if isinstance(value, bytes) else protocol.receive_text)(value, now)
        elif kind == "opened":
            protocol.opened(now)
        elif kind == "decoded":
            protocol.decoded([AudioChunk(np.zeros(640, np.float32), int(now * 16_000) // 640 * 640)])
        elif kind == "result":
            protocol.engine_result(StepResult(CaptionUpdate(committed=(Word("w.", now, now + 0.1),), processed_until=now)))
        elif kind == "engine_failed":
            protocol.engine_failed(RuntimeError("boom"))
        elif kind == "finished":
            protocol.finished(StepResult(CaptionUpdate(processed_until=now)))
        elif kind == "tick":
            protocol.tick(now + 100.0 * (now > 10))
        elif kind == "shutdown":
            protocol.shutdown()
        elif kind == "detach":
            protocol.detach(now)
        elif kind == "attach":
            try:
                protocol.attach(len(protocol.finals) // 2, now)
            except ProtocolError as error:  # documented: not waiting for a resume
                assert error.code == ErrorCode.RESUME_FAILED
        elif kind == "lost":
            protocol.connection_lost()
        elif kind == "dropped":
            protocol.audio_dropped(640)
        check_events(protocol)


# --- the running server, on its own loop in a thread for the whole module -----------------------------

@pytest.fixture(scope="module")
def live_server():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    config = ServerConfig(port=0, limits=LimitsConfig(max_frame_bytes=4_096, start_timeout_s=1.0, idle_timeout_s=2.0),
                          scheduler=SchedulerConfig(stats_interval_s=0.5), resume_grace_s=0.5, shutdown_grace_s=1.0)
    server = Server(config, build_engine(EngineChoice("fake")))
    asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(30)
    yield server
    asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


async def exchange(url: str, sequence: list, started: bool) -> list[dict]:
    """Send the sequence (after a valid start, if `started`), then read until `ended` or quiet."""
    events = []
    async with connect(url, max_size=None) as ws:
        if started:
            await ws.send(json.dumps(PCM_START))
        for message in sequence:
            await ws.send(message)
        try:
            while True:
                async with asyncio.timeout(0.2):
                    events.append(json.loads(await ws.recv()))
                if events[-1]["type"] == "ended":
                    break
        except (TimeoutError, Exception) as error:  # noqa: BLE001 - quiet, or closed by the server
            if not isinstance(error, TimeoutError) and "ConnectionClosed" not in type(error).__name__:
                raise
    return events


codec_garbage = st.tuples(
    st.sampled_from([{"encoding": "container", "container": "ogg"}, {"encoding": "container"},
                     {"encoding": "mulaw", "sample_rate": 8000, "channels": 1},
                     {"encoding": "pcm_f32le", "sample_rate": 16000, "channels": 2}]),
    st.lists(st.binary(min_size=1, max_size=2_000), min_size=1, max_size=4),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(messages, max_size=8), started=st.booleans())
def test_the_server_answers_hostile_messages_with_documented_errors(live_server, sequence, started):
    events = asyncio.run(exchange(live_server.url, sequence, started))
    for event in events:
        assert event["type"] in EVENT_TYPES, event
        if event["type"] == "error":
            assert event["code"] in DOCUMENTED, event


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(garbage=codec_garbage)
def test_the_server_survives_invalid_codec_payloads(live_server, garbage):
    audio, payloads = garbage
    start = json.dumps({"type": "start", "audio": audio})
    events = asyncio.run(exchange(live_server.url, [start, *payloads, json.dumps({"type": "stop"})], False))
    for event in events:
        assert event["type"] in EVENT_TYPES
        if event["type"] == "error":
            assert event["code"] in DOCUMENTED, event


def test_after_the_fuzzing_the_server_still_captions(live_server):
    events = asyncio.run(run_session(live_server.url, tone_pcm(2.0)))
    assert events[-1]["reason"] == "stop" and any(e["type"] == "caption.final" for e in events)


def test_garbage_declared_as_ogg_gets_decode_failed(live_server):
    start = json.dumps({"type": "start", "audio": {"encoding": "container", "container": "ogg"}})
    events = asyncio.run(exchange(live_server.url, [start, b"\x01" * 3000, json.dumps({"type": "stop"})], False))
    assert [e.get("code") for e in events if e["type"] == "error"] == ["decode_failed"] and events[-1]["type"] == "ended"


# --- the foreign protocols' adapters (Twilio, AudioHook, OpenAI Realtime) ----------------------------

ADAPTER_PATHS = ("/v1/twilio", "/v1/audiohook", "/v1/realtime?intent=transcription")
foreign = st.one_of(
    st.builds(lambda event, extra: json.dumps({"event": event, **extra}),
              st.sampled_from(["connected", "start", "media", "mark", "stop", "dtmf", 3, None]),
              st.dictionaries(st.sampled_from(["start", "media", "streamSid", "sequenceNumber"]), json_values, max_size=3)),
    st.builds(lambda kind, extra: json.dumps({"type": kind, **extra}),
              st.sampled_from(["open", "ping", "close", "pause", "update", "input_audio_buffer.append",
                               "input_audio_buffer.commit", "transcription_session.update", "session.update", ""]),
              st.dictionaries(st.sampled_from(["audio", "parameters", "id", "seq", "session", "version", "position"]),
                              json_values, max_size=3)),
    messages,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(ADAPTER_PATHS), sequence=st.lists(foreign, max_size=6))
def test_the_protocol_adapters_survive_hostile_input(live_server, path, sequence):
    from patchstream.streaming.adapters.routes import PATHS  # noqa: PLC0415

    assert path.split("?")[0] in PATHS
    url = live_server.url.replace("/v1/stream", path)
    replies = asyncio.run(exchange_raw(url, sequence))
    for reply in replies:  # each in its protocol's own JSON, never a server bug
        assert "internal_error" not in reply and "Traceback" not in reply


async def exchange_raw(url: str, sequence: list) -> list[str]:
    replies = []
    async with connect(url, max_size=None) as ws:
        try:
            for message in sequence:
                await ws.send(message)
            while True:
                async with asyncio.timeout(0.2):
                    reply = await ws.recv()
                replies.append(reply if isinstance(reply, str) else reply.decode("latin-1"))
        except TimeoutError:
            pass
        except Exception as error:  # noqa: BLE001 - closed by the server: the adapter refused the input
            if "ConnectionClosed" not in type(error).__name__:
                raise
    return replies
