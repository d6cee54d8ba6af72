"""The foreign-protocol endpoints and multichannel on a real websocket server (port 0) with the fake
engine: handshakes, per-channel captions, and protocol errors answered the way each emulated API
answers them, without closing a healthy session."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import LimitsConfig, SchedulerConfig, ServerConfig
from patchstream.streaming.server import Server


def bursts(seconds: float, rate: int, every_s: float = 1.0) -> np.ndarray:
    """A 440 Hz tone cut by silences: one fake-engine word per burst (float, [-1, 1])."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t)
    wave[(t % every_s) > every_s * 0.6] = 0.0
    return wave.astype(np.float32)


def s16(samples: np.ndarray) -> bytes:
    return (samples * 32767).astype("<i2").tobytes()


@pytest.fixture
async def server():
    config = ServerConfig(port=0, limits=LimitsConfig(), scheduler=SchedulerConfig(stats_interval_s=0.5), shutdown_grace_s=2.0)
    async with Server(config, build_engine(EngineChoice("fake"))) as running:
        yield running


def url(server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def all_messages(ws) -> list[dict]:
    return [json.loads(message) async for message in ws]


# --- multichannel on the native protocol ------------------------------------------------------------


async def test_each_channel_is_captioned_apart_and_a_silent_one_gets_nothing(server):
    agent = bursts(4.0, 16_000)
    stereo = np.stack([agent, np.zeros_like(agent)], axis=1)  # customer silent throughout
    start = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 2},
             "channels": ["agent", "customer"]}
    async with connect(url(server, "/v1/stream")) as ws:
        await ws.send(json.dumps(start))
        await ws.send(s16(stereo.reshape(-1)))
        await ws.send(json.dumps({"type": "stop"}))
        events = await all_messages(ws)
    captions = [e for e in events if e["type"].startswith("caption.")]
    finals = [e for e in captions if e["type"] == "caption.final"]
    assert {e["channel"] for e in captions} == {"agent"}
    assert " ".join(f["text"] for f in finals) == "w0 w1 w2. w3"  # how words group depends on step timing
    assert [f["caption_id"] for f in finals] == [f"agent-c{i}" for i in range(len(finals))]
    assert events[-1] == {"type": "ended", "reason": "stop", "audio_received_s": 4.0, "captions": len(finals)}


async def test_two_speaking_channels_interleave_their_finals_by_media_time(server):
    agent, customer = bursts(6.0, 16_000, every_s=2.0), bursts(6.0, 16_000, every_s=2.0)
    shift = 16_000  # the customer speaks in the agent's silences, one second later
    customer = np.concatenate([np.zeros(shift, np.float32), customer[:-shift]])
    stereo = np.stack([agent, customer], axis=1)
    start = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 2},
             "channels": ["agent", "customer"], "interim_results": False}
    async with connect(url(server, "/v1/stream")) as ws:
        await ws.send(json.dumps(start))
        pcm = s16(stereo.reshape(-1))
        for offset in range(0, len(pcm), 6_400):
            await ws.send(pcm[offset : offset + 6_400])
        await ws.send(json.dumps({"type": "stop"}))
        events = await all_messages(ws)
    finals = [e for e in events if e["type"] == "caption.final"]
    assert [f["start"] for f in finals] == sorted(f["start"] for f in finals)
    for label in ("agent", "customer"):
        assert " ".join(f["text"] for f in finals if f["channel"] == label) == "w0 w1 w2."


async def test_channel_labels_must_match_the_channel_count(server):
    start = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 1},
             "channels": ["agent", "customer"]}
    async with connect(url(server, "/v1/stream")) as ws:
        await ws.send(json.dumps(start))
        events = await all_messages(ws)
    assert events[0]["type"] == "error" and events[0]["code"] == "bad_format" and events[0]["fatal"]


# --- routes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "status"), [("/v1/nowhere", 404), ("/v1/realtime", 400), ("/v1/realtime?intent=conversation", 400)])
async def test_unknown_paths_and_non_transcription_realtime_sessions_are_refused(server, path, status):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url(server, path)):
            pass
    assert refused.value.response.status_code == status


# --- OpenAI Realtime ------------------------------------------------------------------------------------


async def realtime_next(ws, kind: str) -> dict:
    while True:
        event = json.loads(await ws.recv())
        if event["type"] == kind:
            return event


async def test_realtime_errors_have_the_api_shape_and_leave_the_session_open(server):
    async with connect(url(server, "/v1/realtime?intent=transcription")) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created" and created["session"]["type"] == "transcription"

        await ws.send(json.dumps({"type": "response.create", "event_id": "evt_1"}))
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["event_id"].startswith("event_")
        assert error["error"]["type"] == "invalid_request_error" and error["error"]["code"] == "invalid_value"
        assert error["error"]["param"] == "type" and error["error"]["event_id"] == "evt_1"

        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "not base64!"}))
        assert json.loads(await ws.recv())["error"]["param"] == "audio"

        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription",
                                  "audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}}}))
        assert json.loads(await ws.recv())["error"]["param"] == "session.audio.input.format"

        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        assert json.loads(await ws.recv())["error"]["code"] == "input_audio_buffer_commit_empty"

        await ws.send("{not json")
        assert json.loads(await ws.recv())["error"]["code"] == "invalid_json"

        # Still healthy: a manual-commit session in G.711 A-law transcribes.
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcma"}, "turn_detection": None}}}}))
        updated = await realtime_next(ws, "session.updated")
        assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcma"}
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        import av  # noqa: PLC0415

        alaw = alaw_bytes(bursts(2.0, 8_000), av)
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(alaw).decode()}))
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcmu"}}}}}))
        assert json.loads(await ws.recv())["error"]["param"] == "format"  # the format is fixed once audio flows
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        committed = await realtime_next(ws, "input_audio_buffer.committed")
        completed = await realtime_next(ws, "conversation.item.input_audio_transcription.completed")
        assert completed["item_id"] == committed["item_id"] and completed["transcript"] == "w0 w1"


def alaw_bytes(samples: np.ndarray, av) -> bytes:
    encoder = av.CodecContext.create("pcm_alaw", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 8_000, "mono", "s16"
    frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 8_000
    return b"".join(bytes(packet) for packet in [*encoder.encode(frame), *encoder.encode(None)])


async def test_realtime_beta_transcription_session_update_and_clear(server):
    async with connect(url(server, "/v1/realtime?intent=transcription")) as ws:
        await realtime_next(ws, "session.created")
        await ws.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "input_audio_transcription": {"model": "gpt-4o-transcribe"}, "turn_detection": None}}))
        updated = await realtime_next(ws, "transcription_session.updated")
        assert updated["session"]["input_audio_format"] == "pcm16" and updated["session"]["turn_detection"] is None
        pcm = s16(bursts(1.0, 24_000))
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        await realtime_next(ws, "input_audio_buffer.cleared")
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))  # nothing since the clear
        assert (await realtime_next(ws, "error"))["error"]["code"] == "input_audio_buffer_commit_empty"
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        completed = await realtime_next(ws, "conversation.item.input_audio_transcription.completed")
        assert completed["transcript"] == "w1"  # the cleared burst's word is dropped


# --- Twilio -------------------------------------------------------------------------------------------


def twilio(event: str, **fields) -> str:
    return json.dumps({"event": event, "streamSid": "MZ1", **fields})


async def test_twilio_bad_media_is_refused_and_the_call_goes_on(server):
    mulaw = bytes([0xFF]) * 160
    tone = np.frombuffer(s16(bursts(2.0, 8_000)), "<i2")
    import av  # noqa: PLC0415

    encoder = av.CodecContext.create("pcm_mulaw", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 8_000, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 8_000
    speech = b"".join(bytes(packet) for packet in [*encoder.encode(frame), *encoder.encode(None)])
    async with connect(url(server, "/v1/twilio")) as ws:
        await ws.send(twilio("connected", protocol="Call", version="1.0.0"))
        await ws.send(twilio("media", media={"track": "inbound", "payload": ""}))  # before start
        await ws.send(twilio("start", start={"streamSid": "MZ1", "callSid": "CA1", "tracks": ["inbound", "outbound"],
                                             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}))
        await ws.send(twilio("media", media={"track": "inbound", "timestamp": "0", "payload": "%%%"}))
        await ws.send(twilio("hello"))
        for index in range(len(speech) // 160):
            for track, payload in (("inbound", speech[index * 160 : (index + 1) * 160]), ("outbound", mulaw)):
                media = {"track": track, "timestamp": str(index * 20), "payload": base64.b64encode(payload).decode()}
                await ws.send(twilio("media", media=media))
        await ws.send(twilio("stop", stop={"callSid": "CA1"}))
        events = await all_messages(ws)
    errors = [e["code"] for e in events if e["type"] == "error"]
    assert errors == ["not_started", "bad_message", "unknown_message"]
    finals = [e for e in events if e["type"] == "caption.final"]
    assert {f["channel"] for f in finals} == {"inbound"} and " ".join(f["text"] for f in finals) == "w0 w1"
    assert events[-1]["type"] == "ended" and events[-1]["reason"] == "stop"


# --- AudioHook ----------------------------------------------------------------------------------------


def hook(kind: str, seq: int, **parameters) -> str:
    return json.dumps({"version": "2", "id": "e160e428-53e2-487c-977d-96989bf5c99d", "type": kind, "seq": seq,
                       "serverseq": 0, "position": "PT0S", "parameters": parameters})


OFFER = [{"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}]


async def test_audiohook_wrong_sequence_number_is_a_disconnect(server):
    async with connect(url(server, "/v1/audiohook")) as ws:
        await ws.send(hook("open", 1, media=OFFER, language="en-US"))
        assert json.loads(await ws.recv())["type"] == "opened"
        await ws.send(hook("ping", 5))
        disconnect = json.loads(await ws.recv())
        assert disconnect["type"] == "disconnect" and disconnect["parameters"]["reason"] == "error"
        assert "seq" in disconnect["parameters"]["info"] and disconnect["clientseq"] == 1


async def test_audiohook_refuses_media_it_cannot_decode_and_audio_before_open(server):
    async with connect(url(server, "/v1/audiohook")) as ws:
        await ws.send(b"\xff" * 320)
        assert json.loads(await ws.recv())["type"] == "disconnect"
    async with connect(url(server, "/v1/audiohook")) as ws:
        await ws.send(hook("open", 1, media=[{"type": "audio", "format": "L16", "channels": ["external"], "rate": 8000}]))
        disconnect = json.loads(await ws.recv())
        assert disconnect["type"] == "disconnect" and "PCMU" in disconnect["parameters"]["info"]


async def test_audiohook_pause_and_close_handshake(server):
    async with connect(url(server, "/v1/audiohook")) as ws:
        await ws.send(hook("open", 1, media=OFFER))
        assert json.loads(await ws.recv())["type"] == "opened"
        await ws.send(hook("paused", 2))
        await ws.send(hook("resumed", 3, start="PT0S", discarded="PT1.5S"))
        await ws.send(b"\xff" * 1600)
        await ws.send(hook("ping", 4))
        assert json.loads(await ws.recv())["type"] == "pong"
        await ws.send(hook("close", 5, reason="end"))
        closed = json.loads(await ws.recv())
        assert closed["type"] == "closed" and closed["clientseq"] == 5


async def test_audiohook_transcripts_keep_one_entity_id_per_caption_and_name_the_channel(server):
    customer = np.frombuffer(mulaw(bursts(2.0, 8_000)), np.uint8)
    stereo = np.stack([customer, np.full_like(customer, 0xFF)], axis=1).tobytes()  # external speaks, internal silent
    async with connect(url(server, "/v1/audiohook")) as ws:
        await ws.send(hook("open", 1, media=OFFER))
        assert json.loads(await ws.recv())["type"] == "opened"
        await ws.send(stereo)
        await ws.send(hook("close", 2, reason="end"))
        replies = await all_messages(ws)
    transcripts = [e["data"] for r in replies if r["type"] == "event" for e in r["parameters"]["entities"]]
    finals = [t for t in transcripts if t["isFinal"]]
    assert " ".join(t["alternatives"][0]["interpretations"][0]["transcript"] for t in finals) == "w0 w1"
    assert {t["channel"] for t in transcripts} == {"external"}
    assert {t["id"] for t in transcripts} == {t["id"] for t in finals}  # a caption's partials share its final's id
    assert len({t["id"] for t in finals}) == len(finals)
    tokens = [token for t in finals for token in t["alternatives"][0]["interpretations"][0]["tokens"]]
    assert [t["value"] for t in tokens] == ["w0", "w1"] and tokens[0]["offset"] == "PT0S"
    assert replies[-1]["type"] == "closed"


async def test_realtime_server_vad_items_chain_and_their_deltas_make_the_transcript(server):
    async with connect(url(server, "/v1/realtime?intent=transcription")) as ws:
        await realtime_next(ws, "session.created")
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
        await realtime_next(ws, "session.updated")
        # Two sentences (the fake engine ends one every third word), then silence.
        pcm = s16(np.concatenate([bursts(6.0, 24_000), np.zeros(2 * 24_000, np.float32)]))
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
        events, completed = [], []
        while len(" ".join(c["transcript"] for c in completed).split()) < 6:
            events.append(json.loads(await ws.recv()))
            if events[-1]["type"] == "conversation.item.input_audio_transcription.completed":
                completed.append(events[-1])
    assert " ".join(c["transcript"] for c in completed) == "w0 w1 w2. w3 w4 w5."
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert [c["item_id"] for c in committed] == [c["item_id"] for c in completed]
    assert committed[0]["previous_item_id"] is None and committed[1]["previous_item_id"] == committed[0]["item_id"]
    for item in completed:
        deltas = [e["delta"] for e in events if e["type"].endswith(".delta") and e["item_id"] == item["item_id"]]
        assert "".join(deltas) == item["transcript"]
    started = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stopped = [e for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    assert started[0]["audio_start_ms"] == 0 and [e["item_id"] for e in started] == [e["item_id"] for e in stopped]
    assert all(a["audio_start_ms"] < b["audio_end_ms"] for a, b in zip(started, stopped))


def mulaw(samples: np.ndarray) -> bytes:
    import av  # noqa: PLC0415

    encoder = av.CodecContext.create("pcm_mulaw", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 8_000, "mono", "s16"
    frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 8_000
    return b"".join(bytes(packet) for packet in [*encoder.encode(frame), *encoder.encode(None)])
