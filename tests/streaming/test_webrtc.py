"""WebRTC ingest with an in-process aiortc peer pair: a real server (port 0, the fake engine) and
an aiortc client sending synthetic audio and video tracks, signalled over the session's websocket.

The fake engine names each tone burst `wN` at the burst's media times and describes each video
frame with its mean level, so the tests read the timing the server gave the media: bursts and
frames must land at the media times they were sent at. Packet loss (some, then all) and a peer
that vanishes must end the session with an error event, never hang it or hurt the server.
"""

from __future__ import annotations

import asyncio
import json
import random
import re

import numpy as np
import pytest
from websockets.asyncio.client import connect

from patchstream.clients.webrtc_sender import ImageTrack, PcmTrack, apply_answer, new_peer_connection, offer_for
from patchstream.model.api import AudioChunk, EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import LimitsConfig, SchedulerConfig, ServerConfig
from patchstream.streaming.protocol import WebRTCOffer, control_to_json
from patchstream.streaming.server import Server

RATE = 16_000
BURSTS_S = ((0.5, 0.9), (1.5, 1.9), (2.5, 2.9))  # tone on, in media seconds
LENGTH_S = 3.4
WEBRTC_START = {"type": "start", "audio": {"encoding": "webrtc"}, "video": {"encoding": "webrtc"}}
EVENT_TIMEOUT_S = 60.0  # generous: two cores shared with other test runs


def burst_pcm() -> np.ndarray:
    t = np.arange(int(LENGTH_S * RATE)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * 440 * t)
    on = np.zeros_like(t, bool)
    for start, end in BURSTS_S:
        on |= (t >= start) & (t < end)
    return (np.where(on, wave, 0.0) * 32767).astype(np.int16)


def level_picture(t: float) -> np.ndarray:
    """A flat grey whose level tells the frame's media time: 40 + 50 per second."""
    return np.full((96, 128, 3), int(40 + 50 * t), np.uint8)


def level_time(text: str) -> float:
    return (float(re.search(r"mean (\d+)", text).group(1)) - 40) / 50


def pcm_source(pcm: np.ndarray):
    pieces = [pcm[i : i + RATE // 10] for i in range(0, len(pcm), RATE // 10)]

    async def source():
        return pieces.pop(0) if pieces else None

    return source


@pytest.fixture
async def server():
    config = ServerConfig(
        port=0,
        limits=LimitsConfig(peer_media_timeout_s=3.0),  # short for the tests, long enough for a loaded machine
        scheduler=SchedulerConfig(stats_interval_s=0.5),
        shutdown_grace_s=2.0,
    )
    async with Server(config, build_engine(EngineChoice("fake"))) as running:
        yield running


def record_submitted(server: Server) -> list:
    """Every chunk and frame the session hands the scheduler (after the chunker and sampler)."""
    seen = []
    submit = server.scheduler.submit

    def spy(slot, media):
        seen.append(media)
        return submit(slot, media)

    server.scheduler.submit = spy
    return seen


async def open_peer(ws, audio: PcmTrack, video: ImageTrack | None = None):
    """Start a WebRTC session on `ws`, offer the tracks, apply the answer; the peer connection."""
    await ws.send(json.dumps(WEBRTC_START if video else {**WEBRTC_START, "video": None}))
    assert (await next_event(ws))["type"] == "ready"
    pc = new_peer_connection()
    pc.addTrack(audio)
    if video is not None:
        pc.addTrack(video)
    await ws.send(control_to_json(await offer_for(pc)))
    answer = await next_event(ws, "webrtc.answer")
    await apply_answer(pc, answer["sdp"])
    return pc


async def next_event(ws, kind: str | None = None) -> dict:
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        while True:
            event = json.loads(await ws.recv())
            if kind is None or event["type"] == kind:
                return event


async def until_ended(ws) -> list[dict]:
    events = []
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        async for message in ws:
            events.append(json.loads(message))
            if events[-1]["type"] == "ended":
                return events
    return events


def of_type(events, kind):
    return [event for event in events if event["type"] == kind]


async def test_synthetic_audio_and_video_reach_the_chunker_at_their_media_times(server):
    submitted = record_submitted(server)
    audio = PcmTrack(pcm_source(burst_pcm()))
    async with connect(server.url) as ws:
        pc = await open_peer(ws, audio, ImageTrack(level_picture, fps=10))
        try:
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                await audio.finished.wait()
            await ws.send(json.dumps({"type": "stop"}))
            events = await until_ended(ws)
        finally:
            await pc.close()
    assert events[-1] == {**events[-1], "reason": "stop"}
    assert not [e for e in events if e["type"] == "error"]
    words = [w for final in of_type(events, "caption.final") for w in final["words"]]
    assert [w["text"].rstrip(".") for w in words] == ["w0", "w1", "w2"]
    for word, (start, end) in zip(words, BURSTS_S):
        # 40 ms frames, Opus and resampler delays: the burst lands within two frames of its time.
        assert abs(word["start"] - start) <= 0.09, (word, start)
        assert abs(word["end"] - end) <= 0.09, (word, end)
    chunks = [m for m in submitted if isinstance(m, AudioChunk)]
    assert chunks[0].start_sample == 0
    for before, after in zip(chunks, chunks[1:]):
        assert after.start_sample == before.end_sample and not after.discontinuity  # one timeline, no holes
    frames = [m for m in submitted if not isinstance(m, AudioChunk)]
    assert len(frames) >= 4  # the fake engine samples 2 frames per media second of the 10 sent
    for frame in frames:
        shown_at = (float(frame.pixels.mean()) - 40) / 50  # VP8 keeps a flat grey's level
        # Within the video track, time is RTP time; where the track starts is its first frame's
        # arrival (peer_media.py), so the bound allows for the two tracks starting apart.
        assert abs(frame.start_s - shown_at) <= 0.4, (frame.start_s, shown_at)
    spacing = np.diff([frame.start_s for frame in frames])
    assert (spacing >= 0.4).all()  # the engine's rate: the same frame sampler as the websocket path


async def test_some_packet_loss_keeps_time_then_total_loss_ends_the_session_with_an_error(server):
    submitted = record_submitted(server)
    audio = PcmTrack(pcm_source(np.tile(burst_pcm(), 3)))
    async with connect(server.url) as ws:
        pc = await open_peer(ws, audio)
        sender = pc.getSenders()[0]
        dtls = sender.transport
        send_rtp = dtls._send_rtp
        chance = random.Random(7)
        loss = {"rate": 0.0}

        async def lossy(data: bytes) -> None:
            if chance.random() >= loss["rate"]:
                await send_rtp(data)

        dtls._send_rtp = lossy
        try:
            await asyncio.sleep(1.0)
            loss["rate"] = 0.2  # one packet in five lost: concealed as silence, time kept
            await asyncio.sleep(2.0)
            received_before_blackout = sum(len(m.samples) for m in submitted if isinstance(m, AudioChunk))
            loss["rate"] = 1.0  # nothing gets through any more
            events = await until_ended(ws)
        finally:
            await pc.close()
    errors = of_type(events, "error")
    assert errors and errors[-1]["code"] == "peer_lost" and errors[-1]["fatal"], errors
    assert events[-1]["type"] == "ended" and events[-1]["reason"] == "error"
    chunks = [m for m in submitted if isinstance(m, AudioChunk)]
    for before, after in zip(chunks, chunks[1:]):
        assert after.start_sample == before.end_sample  # lost packets became filled gaps, not a shifted clock
    assert received_before_blackout / RATE >= 2.0


async def test_a_peer_that_vanishes_ends_the_session_with_an_error_and_the_server_goes_on(server):
    audio = PcmTrack(pcm_source(np.tile(burst_pcm(), 3)))
    async with connect(server.url) as ws:
        pc = await open_peer(ws, audio)
        await next_event(ws, "caption.partial")  # media flows
        await pc.close()  # the peer is gone without a `stop`
        events = await until_ended(ws)
    errors = of_type(events, "error")
    assert [e["code"] for e in errors] == ["peer_lost"] and errors[0]["fatal"]
    assert events[-1]["reason"] == "error"
    assert server.active_sessions == 0 or await _drained(server)
    # The server still serves: a websocket session right after works.
    async with connect(server.url) as ws:
        await ws.send(json.dumps({"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": RATE, "channels": 1}}))
        assert (await next_event(ws))["type"] == "ready"


async def _drained(server: Server) -> bool:
    for _ in range(100):
        if server.active_sessions == 0:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_signalling_errors_are_clear_and_a_bad_offer_ends_the_session(server):
    async with connect(server.url) as ws:
        await ws.send(control_to_json(WebRTCOffer("v=0")))  # before `start`
        assert (await next_event(ws))["code"] == "not_started"
        await ws.send(json.dumps({"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": RATE, "channels": 1}}))
        await next_event(ws, "ready")
        await ws.send(control_to_json(WebRTCOffer("v=0")))  # not a WebRTC session: ignored
        error = await next_event(ws, "error")
        assert error["code"] == "bad_message" and not error["fatal"]
    async with connect(server.url) as ws:
        await ws.send(json.dumps({**WEBRTC_START, "video": None}))
        await next_event(ws, "ready")
        await ws.send(b"\x00" * 640)  # bytes in a WebRTC session are refused, not decoded
        assert (await next_event(ws, "error"))["code"] == "bad_message"
        await ws.send(control_to_json(WebRTCOffer("this is not SDP")))
        events = await until_ended(ws)
    assert [(e["code"], e["fatal"]) for e in of_type(events, "error")] == [("bad_offer", True)]


async def test_an_offer_without_a_common_codec_is_unsupported_codec(server):
    pc = new_peer_connection()
    pc.addTrack(PcmTrack(pcm_source(burst_pcm())))
    offer = (await offer_for(pc)).sdp
    await pc.close()
    # Rename every audio codec to one the server does not decode.
    for codec, other in (("opus/48000", "speex/48000"), ("PCMU/8000", "G726/8000"), ("PCMA/8000", "G729/8000"), ("G722/8000", "iLBC/8000")):
        offer = offer.replace(codec, other)
    async with connect(server.url) as ws:
        await ws.send(json.dumps({**WEBRTC_START, "video": None}))
        await next_event(ws, "ready")
        await ws.send(control_to_json(WebRTCOffer(offer)))
        events = await until_ended(ws)
    errors = of_type(events, "error")
    assert [(e["code"], e["fatal"]) for e in errors] == [("unsupported_codec", True)], errors
    assert "Opus" in errors[0]["message"]


async def test_shutdown_closes_live_peer_connections(server):
    audio = PcmTrack(pcm_source(np.tile(burst_pcm(), 5)))
    async with connect(server.url) as ws:
        pc = await open_peer(ws, audio)
        await next_event(ws, "caption.partial")
        session = next(iter(server._sessions.values()))
        peer = session._peer
        await server.shutdown()
        events = await until_ended(ws)
        await pc.close()
    assert events[-1]["reason"] == "shutdown"
    assert peer._pc.connectionState == "closed"


def test_one_module_per_side_imports_aiortc():
    from pathlib import Path  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    importers = sorted(
        str(path.relative_to(root))
        for folder in ("streaming", "clients", "model", "bench")
        for path in (root / folder).glob("*.py")
        if re.search(r"^\s*(from|import) aiortc", path.read_text(encoding="utf-8"), re.MULTILINE)
    )
    assert importers == ["clients/webrtc_sender.py", "streaming/webrtc.py"]
