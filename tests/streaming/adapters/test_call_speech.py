"""Call-center protocols end to end on real speech (`../shared/speech`) through the CPU Whisper
engine: a stereo agent/customer call on the native protocol, a replayed Twilio Media Stream (two
μ-law tracks, a mark, a dtmf, stop), a replayed Genesys AudioHook session, and the official
`openai` SDK's realtime client against the OpenAI-compatible endpoint. Media is built at test time
(G.711 by PyAV's encoders); words are checked by WER bounds, times against where each party spoke."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from patchstream.bench.speech_set import read_samples
from patchstream.streaming.config import LimitsConfig, SchedulerConfig, ServerConfig
from patchstream.streaming.server import Server
from tests.streaming.adapters.telephony import RATE, call, g711, pcm24k, turn_spans, wer

pytestmark = pytest.mark.slow

# Party A (channel 0) speaks, then B (channel 1), then A again; 1.5 s of silence around each turn.
TURNS = (("arctic_aew_a0001.wav", 0), ("ls_1272-128104-0000.wav", 1), ("arctic_aew_a0003.wav", 0))
MAX_WER = 0.35  # tiny.en on clean read speech through 8 kHz μ-law; the turns are short
# tiny.en's word times are rough, and the first word after a long silence may be stamped from the
# silence's start: a caption's end lies in its own party's turn, give or take this.
SPAN_SLACK_S = 1.0


@pytest.fixture(scope="module")
def turns(real_speech):
    return [(channel, read_samples(real_speech[name].path)) for name, channel in TURNS]


@pytest.fixture(scope="module")
def references(real_speech):
    """The reference transcript of each channel, its turns in order."""
    refs = {0: [], 1: []}
    for name, channel in TURNS:
        refs[channel].append(real_speech[name].reference)
    return {channel: " ".join(texts) for channel, texts in refs.items()}


@pytest.fixture
async def server(whisper_engine):
    # The calls are replayed faster than real time: a backlog above the live default (30 s, then
    # the oldest audio is dropped as a live stream must) would cut words on a loaded machine.
    config = ServerConfig(port=0, limits=LimitsConfig(max_backlog_s=120.0), scheduler=SchedulerConfig(stats_interval_s=1.0), shutdown_grace_s=5.0)
    async with Server(config, whisper_engine) as running:
        yield running


def base_url(server) -> str:
    return f"ws://127.0.0.1:{server.port}"


def check_call(finals: list[dict], labels: tuple[str, str], turns, references) -> None:
    """Finals labelled by channel, in media-time order, each inside a turn of its own channel,
    and each channel's words close to what that party said."""
    assert finals
    assert [f["start"] for f in finals] == sorted(f["start"] for f in finals)
    spans = turn_spans(turns)
    for final in finals:
        channel = labels.index(final["channel"])
        assert any(
            c == channel and start - SPAN_SLACK_S <= final["end"] <= end + SPAN_SLACK_S for c, start, end in spans
        ), (final, spans)
    for channel, label in enumerate(labels):
        said = " ".join(f["text"] for f in finals if f["channel"] == label)
        assert wer(references[channel], said) <= MAX_WER, (label, said)


async def test_stereo_call_finals_are_labelled_and_in_media_time_order(server, turns, references):
    audio = call(turns)
    pcm = (np.clip(audio.T, -1, 1) * 32767).astype("<i2").tobytes()  # (n, 2) interleaved
    start = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": RATE, "channels": 2},
             "channels": ["agent", "customer"]}
    async with connect(f"{base_url(server)}/v1/stream") as ws:
        await ws.send(json.dumps(start))
        for offset in range(0, len(pcm), 12_800):  # 200 ms
            await ws.send(pcm[offset : offset + 12_800])
        await ws.send(json.dumps({"type": "stop"}))
        events = [json.loads(message) async for message in ws]
    finals = [e for e in events if e["type"] == "caption.final"]
    check_call(finals, ("agent", "customer"), turns, references)
    assert all(e.get("channel") in ("agent", "customer") for e in events if e["type"].startswith("caption."))
    assert events[-1]["type"] == "ended" and events[-1]["captions"] == len(finals)


def twilio_messages(turns) -> list[str]:
    """A replayed Media Stream: outbound (channel 0) and inbound (channel 1) μ-law tracks in 20 ms
    media messages, interleaved as Twilio sends them, with a mark and a dtmf midway."""
    audio = call(turns)
    tracks = {"outbound": g711(audio[0]), "inbound": g711(audio[1])}
    sid = "MZ0123456789abcdef0123456789abcdef"
    messages = [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {"event": "start", "sequenceNumber": "1", "streamSid": sid,
         "start": {"accountSid": "AC1", "streamSid": sid, "callSid": "CA1", "tracks": ["inbound", "outbound"],
                   "customParameters": {"line": "support"},
                   "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}},
    ]
    chunks = len(tracks["inbound"]) // 160
    for index in range(chunks):
        for track in ("inbound", "outbound"):
            payload = base64.b64encode(tracks[track][index * 160 : (index + 1) * 160]).decode()
            messages.append({"event": "media", "streamSid": sid, "sequenceNumber": str(len(messages)),
                             "media": {"track": track, "chunk": str(index + 1), "timestamp": str(index * 20), "payload": payload}})
        if index == chunks // 2:
            messages.append({"event": "mark", "streamSid": sid, "mark": {"name": "halfway"}})
            messages.append({"event": "dtmf", "streamSid": sid, "dtmf": {"track": "inbound_track", "digit": "5"}})
    messages.append({"event": "stop", "streamSid": sid, "stop": {"accountSid": "AC1", "callSid": "CA1"}})
    return [json.dumps(message) for message in messages]


async def test_a_silent_channel_costs_no_decode(server, turns, whisper_engine, monkeypatch):
    decoded = []
    decode = whisper_engine._decode

    def counting(requests):
        decoded.extend(float(np.abs(request.audio).max()) for request in requests)
        return decode(requests)

    monkeypatch.setattr(whisper_engine, "_decode", counting)
    audio = call([turn for turn in turns if turn[0] == 0])  # the customer never speaks: digital silence
    pcm = (np.clip(audio.T, -1, 1) * 32767).astype("<i2").tobytes()
    start = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": RATE, "channels": 2},
             "channels": ["agent", "customer"]}
    async with connect(f"{base_url(server)}/v1/stream") as ws:
        await ws.send(json.dumps(start))
        await ws.send(pcm)
        await ws.send(json.dumps({"type": "stop"}))
        events = [json.loads(message) async for message in ws]
    assert {e["channel"] for e in events if e["type"] == "caption.final"} == {"agent"}
    assert decoded and min(decoded) > 0.0  # every decode was of the agent's speech, none of the silence


async def test_twilio_stream_gets_captions_per_track(server, turns, references):
    async with connect(f"{base_url(server)}/v1/twilio") as ws:
        for message in twilio_messages(turns):
            await ws.send(message)
        events = [json.loads(message) async for message in ws]
    finals = [e for e in events if e["type"] == "caption.final"]
    check_call(finals, ("outbound", "inbound"), turns, references)
    assert all(e["streamSid"].startswith("MZ") for e in events)
    mark = next(e for e in events if e["type"] == "mark")
    assert mark["name"] == "halfway" and 5.0 < mark["time"] < 12.0
    assert next(e for e in events if e["type"] == "dtmf")["digit"] == "5"
    assert events[-1]["type"] == "ended"


async def test_audiohook_session_gets_transcripts_per_channel(server, turns, references):
    audio = call(turns)
    external, internal = g711(audio[1]), g711(audio[0])  # customer = external, agent = internal
    stereo = np.stack([np.frombuffer(external, np.uint8), np.frombuffer(internal, np.uint8)], axis=1).tobytes()
    session = "e160e428-53e2-487c-977d-96989bf5c99d"
    seq = iter(range(1, 1000))

    def message(kind: str, **parameters) -> str:
        return json.dumps({"version": "2", "id": session, "type": kind, "seq": next(seq), "serverseq": 0,
                           "position": "PT0S", "parameters": parameters})

    async with connect(f"{base_url(server)}/v1/audiohook") as ws:
        await ws.send(message("open", organizationId="d7934305-0972-4844-938e-9060eef73d05",
                              conversationId="090eaa2f-72fa-480a-83e0-8667ff89c0ec",
                              participant={"id": "883efee8-3d6c-4537-b500-6d7ca4b92fa0", "ani": "+1-555-555-1234",
                                           "aniName": "John Doe", "dnis": "+1-800-555-6789"},
                              media=[{"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}],
                              language="en-US"))
        opened = json.loads(await ws.recv())
        assert opened["type"] == "opened" and opened["clientseq"] == 1 and opened["seq"] == 1
        assert opened["parameters"]["media"][0]["channels"] == ["external", "internal"]
        await ws.send(message("ping", rtt="PT0.05S"))
        for offset in range(0, len(stereo), 3_200):  # 200 ms of both channels
            await ws.send(stereo[offset : offset + 3_200])
        await ws.send(message("paused"))
        await ws.send(message("resumed", start="PT20S", discarded="PT0S"))
        await ws.send(message("close", reason="end"))
        replies = [json.loads(text) async for text in ws]
    assert [r["seq"] for r in replies] == list(range(2, 2 + len(replies)))
    assert any(r["type"] == "pong" for r in replies)
    assert replies[-1]["type"] == "closed"
    transcripts = [e["data"] for r in replies if r["type"] == "event" for e in r["parameters"]["entities"]]
    finals = [
        {"channel": {"external": "customer", "internal": "agent"}[t["channel"]],
         "text": t["alternatives"][0]["interpretations"][0]["transcript"],
         "start": float(t["offset"][2:-1]), "end": float(t["offset"][2:-1]) + float(t["duration"][2:-1])}
        for t in transcripts if t["isFinal"]
    ]
    check_call(finals, ("agent", "customer"), turns, references)


async def realtime_events(server, session: dict, audio: bytes, commit: bool, words: int) -> list:
    """Drive the endpoint with the official SDK: configure, append `audio`, optionally commit, and
    collect events until completed transcriptions hold at least `words` words."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="not-needed", websocket_base_url=f"{base_url(server)}/v1")
    events = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        await connection.session.update(session=session)
        for offset in range(0, len(audio), 4_800):  # 100 ms of 24 kHz PCM
            await connection.input_audio_buffer.append(audio=base64.b64encode(audio[offset : offset + 4_800]).decode())
        if commit:
            await connection.input_audio_buffer.commit()
        async with asyncio.timeout(90):
            async for event in connection:
                events.append(event)
                if len(" ".join(completed_transcripts(events)).split()) >= words:
                    break
    return events


def completed_transcripts(events) -> list[str]:
    return [e.transcript for e in events if e.type == "conversation.item.input_audio_transcription.completed"]


async def test_openai_sdk_gets_deltas_and_completed_with_server_vad(server, real_speech):
    speech = read_samples(real_speech["ls_1272-128104-0000.wav"].path)
    audio = pcm24k(np.concatenate([speech, np.zeros(3 * RATE, np.float32)]))
    session = {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "whisper-1", "language": "en"},
        "turn_detection": {"type": "server_vad"}}}}
    reference = real_speech["ls_1272-128104-0000.wav"].reference
    events = await realtime_events(server, session, audio, commit=False, words=len(reference.split()) - 3)
    types = [event.type for event in events]
    assert types[0] == "session.created" and "session.updated" in types
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    started = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    # One item per utterance: started, committed and completed name the same items, chained in order.
    assert [e.item_id for e in started] == [e.item_id for e in committed] == [e.item_id for e in completed]
    assert [e.previous_item_id for e in committed] == [None] + [e.item_id for e in committed[:-1]]
    for item in completed:
        deltas = [e.delta for e in events if e.type.endswith("transcription.delta") and e.item_id == item.item_id]
        assert "".join(deltas) == item.transcript
    assert 0 <= started[0].audio_start_ms < 1000
    assert wer(reference, " ".join(completed_transcripts(events))) <= MAX_WER


async def test_openai_sdk_manual_commit_in_g711_ulaw(server, real_speech):
    speech = read_samples(real_speech["arctic_aew_a0003.wav"].path)
    audio = g711(speech)
    session = {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1"}, "turn_detection": None}}}
    reference = real_speech["arctic_aew_a0003.wav"].reference
    events = await realtime_events(server, session, audio, commit=True, words=1)
    committed = next(e for e in events if e.type == "input_audio_buffer.committed")
    completed = events[-1]
    assert completed.item_id == committed.item_id and committed.previous_item_id is None
    assert "input_audio_buffer.speech_started" not in [e.type for e in events]
    assert wer(reference, completed.transcript) <= MAX_WER
