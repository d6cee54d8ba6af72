"""Video over the real websocket server (port 0): JPEG/PNG frames after `frame` messages, sampled
to the engine's rate, patchified to its frame budget, interpreted; and the issue's bad-video list
— a corrupt JPEG, a frame before `start`, a 50 MB frame, frames far faster than declared and a
16k x 16k image (refused from its header) — each answered by an error while the session goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image
from websockets.asyncio.client import connect

from patchstream.model.api import EngineChoice
from patchstream.model.composite_engine import CompositeEngine
from patchstream.model.engines import build_engine
from patchstream.model.fake_engine import FakeEngine, FakeEngineConfig
from patchstream.model.vision_engine import SCENE, VisionEngine, VisionEngineConfig
from patchstream.streaming.decode import AudioDecoder, VideoOptions
from patchstream.streaming.protocol import AudioFormat
from patchstream.streaming.server import Server
from tests.streaming.test_server import PCM_START, of_type, server_config, tone_pcm, until_ended

RATE = 16_000
VIDEO_START = {**PCM_START, "video": {"encoding": "jpeg", "fps": 2}}


def jpeg(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=85)
    return out.getvalue()


def solid(value: int, size=(360, 640)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


def png_bomb(side: int = 16_384) -> bytes:
    """A real, valid PNG of side x side black pixels: a few hundred KB that would decode to side² bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    squeeze = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte + one grey row
    body = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.fixture
async def server():
    async with Server(server_config(), build_engine(EngineChoice("fake"))) as running:
        yield running


async def send_frames(ws, frames: list[tuple[float, bytes]]) -> None:
    for time_s, data in frames:
        await ws.send(json.dumps({"type": "frame", "time": time_s}))
        await ws.send(data)


async def video_session(url: str, seconds: float, frames, start=VIDEO_START, middle=(), pace_s: float = 0.02) -> list[dict]:
    """Audio for `seconds`, frames interleaved at their media times, `middle` messages half-way;
    `pace_s` of wall time after each half second of media, so a loaded machine keeps up and the
    frames under test are not dropped (latest frames win under load: another test)."""
    pcm = tone_pcm(seconds)
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps(start))
        second = 2 * RATE
        pending = sorted(frames, key=lambda frame: frame[0])
        for index, offset in enumerate(range(0, len(pcm), second // 2)):
            now = offset / second
            await send_frames(ws, [f for f in pending if f[0] < now + 0.5])
            pending = [f for f in pending if f[0] >= now + 0.5]
            if index == int(seconds):
                for message in middle:
                    await ws.send(message)
            await ws.send(pcm[offset : offset + second // 2])
            await asyncio.sleep(pace_s)
        await send_frames(ws, pending)
        await ws.send(json.dumps({"type": "stop"}))
        return await asyncio.wait_for(until_ended(ws), 30)


async def test_jpeg_frames_become_interpretations_at_the_frame_budget_with_their_media_times(server):
    frames = [(t / 2, jpeg(solid(40 * (t % 4)))) for t in range(6)]  # 2 fps, as declared and as the fake wants
    events = await video_session(server.url, 3.0, frames)
    finals = of_type(events, "interpretation.final")
    assert [f["frame_times"] for f in finals] == [[t / 2] for t in range(6)]
    # 640x360 fitted to the fake's 70-token budget: whole 48 px patches, aspect kept.
    assert all(re.search(r"frame \d+, 528x288", f["text"]) for f in finals), finals
    assert of_type(events, "caption.final") and events[-1]["reason"] == "stop"


async def test_frames_faster_than_the_engine_wants_are_sampled_not_decoded(server):
    frames = [(t / 4, jpeg(solid(10 * t))) for t in range(12)]  # 4 fps declared and sent; the fake takes 2
    start = {**PCM_START, "video": {"encoding": "jpeg", "fps": 4}}
    events = await video_session(server.url, 3.0, frames, start=start)
    times = [f["frame_times"][0] for f in of_type(events, "interpretation.final")]
    assert times == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert not of_type(events, "error")


async def test_a_control_message_changes_the_instruction_mid_session(server):
    async with connect(server.url, max_size=None) as ws:
        await ws.send(json.dumps(VIDEO_START))
        await send_frames(ws, [(0.0, jpeg(solid(90)))])
        await ws.send(tone_pcm(1.0))
        seen = []
        while not of_type(seen, "interpretation.partial"):
            seen.append(json.loads(await ws.recv()))
        await ws.send(json.dumps({"type": "control", "instruction": "count the people"}))
        await send_frames(ws, [(1.0, jpeg(solid(90)))])
        await ws.send(tone_pcm(1.0))
        await ws.send(json.dumps({"type": "stop"}))
        events = seen + await until_ended(ws)
    first = of_type(events, "interpretation.partial")[0]
    last = of_type(events, "interpretation.final")[-1]
    assert first["text"].startswith("describe:") and last["text"].startswith("count the people:")
    assert not of_type(events, "error")


async def test_png_frames_are_accepted_too(server):
    out = io.BytesIO()
    Image.fromarray(solid(200)).save(out, "PNG")
    start = {**PCM_START, "video": {"encoding": "png", "fps": 1}}
    events = await video_session(server.url, 2.0, [(0.0, out.getvalue()), (1.0, out.getvalue())], start=start)
    assert [f["frame_times"] for f in of_type(events, "interpretation.final")] == [[0.0], [1.0]]


# --- bad video: an error event, and the session goes on ------------------------------------------


def errors(events) -> list[str]:
    return [e["code"] for e in of_type(events, "error")]


def assert_survived(events) -> None:
    assert all(not e["fatal"] for e in of_type(events, "error")), events
    assert of_type(events, "caption.final") and events[-1]["reason"] == "stop"


async def test_a_corrupt_jpeg_is_an_error_and_later_frames_still_count(server):
    good = jpeg(solid(120))
    frames = [(0.0, good), (0.5, good[: len(good) // 3] + b"\x00" * 500), (1.0, good)]
    events = await video_session(server.url, 2.0, frames)
    assert errors(events) == ["bad_image"]
    assert [f["frame_times"] for f in of_type(events, "interpretation.final")] == [[0.0], [1.0]]
    assert_survived(events)


async def test_garbage_that_is_no_image_at_all_is_refused(server):
    events = await video_session(server.url, 2.0, [(0.0, b"hello, not a picture")])
    assert errors(events) == ["bad_image"]
    assert_survived(events)


async def test_a_frame_before_start_is_not_started(server):
    async with connect(server.url, max_size=None) as ws:
        await send_frames(ws, [(0.0, jpeg(solid(70)))])  # the announcement and its image, both too early
        await ws.send(json.dumps(VIDEO_START))
        await send_frames(ws, [(0.0, jpeg(solid(70)))])
        await ws.send(tone_pcm(2.0))
        await ws.send(json.dumps({"type": "stop"}))
        events = await until_ended(ws)
    assert [(e["code"], e["fatal"]) for e in events[:2]] == [("not_started", False)] * 2
    assert errors(events) == ["not_started", "not_started"]
    assert [f["frame_times"] for f in of_type(events, "interpretation.final")] == [[0.0]]  # the one after start
    assert_survived(events)


async def test_a_fifty_megabyte_frame_is_rejected_undecoded(server):
    frames = [(0.0, b"\xff\xd8" + b"\x00" * (50 * 1024 * 1024)), (0.5, jpeg(solid(30)))]
    events = await video_session(server.url, 2.0, frames)
    assert errors(events) == ["frame_too_large"]
    assert [f["frame_times"] for f in of_type(events, "interpretation.final")] == [[0.5]]
    assert_survived(events)


async def test_frames_far_above_the_declared_rate_are_refused_once_and_counted(server):
    start = {**PCM_START, "video": {"encoding": "jpeg", "fps": 1}}
    frame = jpeg(solid(60))
    async with connect(server.url, max_size=None) as ws:
        await ws.send(json.dumps(start))
        await send_frames(ws, [(t / 30, frame) for t in range(60)])  # 30 fps on a session that declared 1
        await ws.send(tone_pcm(2.0))
        seen = []
        while not [s for s in of_type(seen, "stats") if s["frames_received"] == 60]:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        await ws.send(json.dumps({"type": "stop"}))
        events = seen + await until_ended(ws)
    assert errors(events) == ["frame_rate_exceeded"]  # reported once, not 58 times
    # Up to twice the declared rate passes (jitter); the rest is dropped and counted.
    assert [f["frame_times"] for f in of_type(events, "interpretation.final")] == [[0.0], [0.5], [1.0], [1.5]]
    assert of_type(events, "stats")[-1]["frames_dropped"] == 56
    assert_survived(events)


async def test_a_decompression_bomb_is_refused_from_its_header(server):
    bomb = png_bomb()
    assert len(bomb) < 2 << 20  # small on the wire ...
    start = {**PCM_START, "video": {"encoding": "png", "fps": 1}}
    events = await video_session(server.url, 2.0, [(0.0, bomb)], start=start)
    assert errors(events) == ["image_too_large"]  # ... refused before 268 M pixels were decoded
    assert "16384x16384" in of_type(events, "error")[0]["message"]
    assert_survived(events)


async def test_video_in_an_audio_only_session_is_video_not_declared(server):
    events = await video_session(server.url, 2.0, [(0.0, jpeg(solid(1)))], start=PCM_START)
    assert errors(events)[0] == "video_not_declared"
    assert of_type(events, "caption.final")


async def test_video_on_an_engine_that_takes_none_ends_at_start():
    engine = FakeEngine(FakeEngineConfig(video_fps=0))
    async with Server(server_config(), engine) as running:
        async with connect(running.url) as ws:
            await ws.send(json.dumps(VIDEO_START))
            events = await until_ended(ws)
    assert events[0]["code"] == "bad_start" and events[0]["fatal"] and "takes no video" in events[0]["message"]


# --- scenes through the composite engine: captions and interpretations in one session ----------


async def test_scene_changes_land_within_one_sampled_frame_of_the_cut():
    engine = CompositeEngine(FakeEngine(FakeEngineConfig(video_fps=0)), VisionEngine(VisionEngineConfig(kinds=frozenset({SCENE}))))
    cuts = [2.3, 4.6]
    colours = [(20, 40, 160), (200, 60, 30), (30, 160, 60)]
    def shown(t):
        return np.full((360, 640, 3), colours[sum(t >= c for c in cuts)], np.uint8)
    start = {**PCM_START, "video": {"encoding": "jpeg", "fps": 4}}
    frames = [(t / 4, jpeg(shown(t / 4))) for t in range(28)]  # 4 fps sent, 1 fps sampled
    async with Server(server_config(), engine) as running:
        # Paced (7 s of media in ~1.4 s) so a loaded machine does not drop the frames at a cut:
        # dropping under load is the rule, but this test is about where cuts land.
        events = await video_session(running.url, 7.0, frames, start=start, pace_s=0.1)
    assert of_type(events, "stats") == [] or of_type(events, "stats")[-1]["frames_dropped"] == 0
    scenes = of_type(events, "interpretation.final")
    assert [s["kind"] for s in scenes] == ["scene", "scene"]
    for scene, cut in zip(scenes, cuts):
        assert scene["start"] <= cut <= scene["end"] and scene["end"] - cut <= 1.0
    assert of_type(events, "caption.final") and events[0]["engine"] == "fake+vision(scene)"


# --- container video: the video track of the audio's container -----------------------------------


def muxed(tmp_path, container: str, seconds: int = 4, fps: int = 5, broken_from: int | None = None, bframes: int = 0) -> bytes:
    """A WebM (VP8 + Opus) or MP4 (H.264 + AAC, fragmented for live reading) of a tone, one colour a
    second. `broken_from`: video packets from that frame on are garbage (a broken track).
    `bframes`: H.264 B-frames (not references: a decoder may skip them)."""
    from fractions import Fraction

    import av

    path = tmp_path / f"clip.{container}"
    options = {"movflags": "frag_keyframe+empty_moov"} if container == "mp4" else {}
    with av.open(str(path), "w", format=container, options=options) as out:
        video = out.add_stream("libvpx" if container == "webm" else "libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.options = (
            {"deadline": "realtime", "cpu-used": "8"}
            if container == "webm"
            else {"preset": "ultrafast", "x264-params": f"bframes={bframes}:b-pyramid=none"}
        )
        video.codec_context.gop_size = fps  # a keyframe (and an MP4 fragment) every second: live-like
        audio = out.add_stream("libopus" if container == "webm" else "aac", rate=48_000, layout="mono")
        pcm = np.frombuffer(tone_pcm(seconds, rate=48_000), np.int16)
        chunk = 48_000 // fps
        resampler = av.AudioResampler(format=audio.codec_context.format.name, layout="mono", rate=48_000)

        def mux_video(packets):
            for packet in packets:
                if broken_from is not None and packet.pts is not None and packet.pts >= broken_from:
                    garbage = av.Packet(b"\x00\x01\x02garbage" * 20)
                    garbage.pts, garbage.dts, garbage.time_base = packet.pts, packet.dts, packet.time_base
                    garbage.stream = packet.stream
                    packet = garbage
                out.mux(packet)

        for number in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(solid(60 * (number // fps) % 256, (240, 320)), format="rgb24")
            frame.pts, frame.time_base = number, Fraction(1, fps)
            mux_video(video.encode(frame))
            piece = av.AudioFrame.from_ndarray(pcm[None, number * chunk : (number + 1) * chunk], format="s16", layout="mono")
            piece.sample_rate, piece.pts, piece.time_base = 48_000, number * chunk, Fraction(1, 48_000)
            for resampled in resampler.resample(piece):
                out.mux(audio.encode(resampled))
        mux_video(video.encode(None))
        out.mux(audio.encode(None))
    return path.read_bytes()


def demux_all(data: bytes, video: VideoOptions) -> tuple[int, list, AudioDecoder]:
    """Audio samples decoded, the container video reports, and the (closed) decoder."""
    decoder = AudioDecoder(AudioFormat("container"), video=video)
    samples, reports = 0, []
    try:
        for offset in range(0, len(data), 4_000):
            samples += sum(piece.num_samples for piece in decoder.decode(data[offset : offset + 4_000]))
            reports.append(decoder.take_video())
        samples += sum(piece.num_samples for piece in decoder.flush())
        reports.append(decoder.take_video())
    finally:
        decoder.close()
    return samples, reports, decoder


def test_a_broken_video_track_switches_video_off_with_one_error_and_the_audio_goes_on(tmp_path):
    data = muxed(tmp_path, "webm", seconds=4, broken_from=12)  # garbage from 2.4 s on
    samples, reports, _ = demux_all(data, VideoOptions(fps=2.0, soft_tokens=70, max_pixels=7680 * 4320))
    errors = [r.error for r in reports if r.error is not None]
    assert len(errors) == 1 and errors[0].code == "decode_failed" and "audio goes on" in errors[0].message
    times = [frame.start_s for r in reports for frame in r.frames]
    assert times and max(times) < 2.4  # frames before the damage were kept
    assert samples >= 3.9 * RATE  # every second of the audio was decoded


def test_a_container_video_track_over_the_pixel_limit_is_not_decoded_and_said_so(tmp_path):
    data = muxed(tmp_path, "webm", seconds=2)
    samples, reports, decoder = demux_all(data, VideoOptions(fps=2.0, soft_tokens=70, max_pixels=320 * 240 - 1))
    (error,) = [r.error for r in reports if r.error is not None]
    assert error.code == "image_too_large" and "320x240" in error.message
    assert not [frame for r in reports for frame in r.frames] and decoder._source.frames_decoded == 0
    assert samples >= 1.9 * RATE


def test_container_frames_not_due_are_skipped_by_the_codec_where_it_can_and_all_are_counted(tmp_path):
    data = muxed(tmp_path, "mp4", seconds=3, fps=10, bframes=2)  # IBBPBBP...: two of three frames need no decode
    _, reports, decoder = demux_all(data, VideoOptions(fps=1.0, soft_tokens=70, max_pixels=7680 * 4320))
    kept = [frame.start_s for r in reports for frame in r.frames]
    assert kept == pytest.approx([0.0, 0.9, 1.8, 2.7], abs=0.05)  # due 0.9 s (1 fps less 10 %) after the last
    assert reports[-1].received == 30  # every frame the container carried counts as received
    assert decoder._source.frames_decoded < 20  # B-frames not due were never decoded


@pytest.mark.parametrize("container", ["webm", "mp4"])
async def test_container_video_is_demuxed_sampled_and_interpreted_on_the_audio_clock(server, tmp_path, container):
    data = muxed(tmp_path, container)
    start = {"type": "start", "audio": {"encoding": "container"}, "video": {"encoding": "container"}}
    async with connect(server.url, max_size=None) as ws:
        await ws.send(json.dumps(start))
        for offset in range(0, len(data), 2_000):  # small pieces, a little apart: a live recorder
            await ws.send(data[offset : offset + 2_000])
            await asyncio.sleep(0.01)
        await ws.send(json.dumps({"type": "stop"}))
        events = await asyncio.wait_for(until_ended(ws), 30)
    times = [f["frame_times"][0] for f in of_type(events, "interpretation.final")]
    # 5 fps sampled to the fake's 2: a frame is due 0.45 s (2 fps, less 10 % jitter) after the last.
    assert times == pytest.approx([0.0, 0.6, 1.2, 1.8, 2.4, 3.0, 3.6], abs=0.05)
    assert all("432x336" in f["text"] for f in of_type(events, "interpretation.final"))
    assert of_type(events, "caption.final") and events[-1]["reason"] == "stop"
    assert not of_type(events, "error")


async def test_a_broken_container_video_track_costs_the_session_its_video_not_its_captions(server, tmp_path):
    data = muxed(tmp_path, "webm", seconds=4, broken_from=12)
    start = {"type": "start", "audio": {"encoding": "container"}, "video": {"encoding": "container"}}
    async with connect(server.url, max_size=None) as ws:
        await ws.send(json.dumps(start))
        for offset in range(0, len(data), 2_000):
            await ws.send(data[offset : offset + 2_000])
            await asyncio.sleep(0.01)
        await ws.send(json.dumps({"type": "stop"}))
        events = await asyncio.wait_for(until_ended(ws), 30)
    assert errors(events) == ["decode_failed"]
    assert of_type(events, "interpretation.final")  # the frames before the damage
    assert_survived(events)
    assert events[-1]["audio_received_s"] >= 3.9


async def test_a_slow_image_decode_never_holds_up_another_sessions_audio(monkeypatch):
    import patchstream.streaming.session as session_module

    release = threading.Event()
    real_decode = session_module.decode_image

    def stuck_decode(*args):
        release.wait(30)  # an image that takes "forever" to decode
        return real_decode(*args)

    monkeypatch.setattr(session_module, "decode_image", stuck_decode)
    config = dataclasses.replace(server_config(), decode_threads=1)  # one shared PCM thread
    try:
        async with Server(config, build_engine(EngineChoice("fake"))) as running:
            async with connect(running.url, max_size=None) as video_ws:
                await video_ws.send(json.dumps(VIDEO_START))
                await send_frames(video_ws, [(0.0, jpeg(solid(50)))])
                await video_ws.send(tone_pcm(0.5))
                # Meanwhile an audio-only session is captioned: its PCM decodes beside the stuck image.
                events = await asyncio.wait_for(video_session(running.url, 2.0, [], start=PCM_START), 20)
                assert of_type(events, "caption.final") and events[-1]["reason"] == "stop"
                release.set()
                await video_ws.send(json.dumps({"type": "stop"}))
                video_events = await asyncio.wait_for(until_ended(video_ws), 20)
            assert of_type(video_events, "interpretation.final") and video_events[-1]["reason"] == "stop"
    finally:
        release.set()


async def test_container_video_needs_a_container_audio_declaration(server):
    async with connect(server.url) as ws:
        await ws.send(json.dumps({**PCM_START, "video": {"encoding": "container"}}))
        events = await until_ended(ws)
    assert events[0]["code"] == "bad_format" and events[0]["fatal"]


async def test_unknown_interpretation_kinds_fail_start_and_are_refused_by_control(server):
    async with connect(server.url) as ws:
        await ws.send(json.dumps({**VIDEO_START, "interpretations": ["faces"]}))
        events = await until_ended(ws)
    assert events[0]["code"] == "bad_start" and "faces" in events[0]["message"]
    control = json.dumps({"type": "control", "interpretations": ["faces"]})
    events = await video_session(server.url, 2.0, [(0.0, jpeg(solid(5)))], middle=[control])
    assert errors(events) == ["unsupported_control"]
    assert_survived(events)


async def test_a_flood_of_control_messages_costs_one_engine_call_at_a_time_and_the_last_wins(server, monkeypatch):
    calls = []
    engine = server.scheduler.engine
    monkeypatch.setattr(engine, "control", lambda state, control, original=engine.control: calls.append(control) or original(state, control))
    async with connect(server.url, max_size=None) as ws:
        await ws.send(json.dumps(VIDEO_START))
        await ws.send(tone_pcm(0.5))
        for index in range(500):
            await ws.send(json.dumps({"type": "control", "instruction": f"look {index}"}))
        await send_frames(ws, [(0.5, jpeg(solid(90)))])
        await ws.send(tone_pcm(1.0))
        await ws.send(json.dumps({"type": "stop"}))
        events = await until_ended(ws)
    assert not of_type(events, "error")
    assert 1 <= len(calls) < 500 and calls[-1].instruction == "look 499"
    assert of_type(events, "interpretation.final")[-1]["text"].startswith("look 499:")


def test_waiting_controls_merge_field_by_field_latest_wins():
    from patchstream.model.api import SessionControl

    merged = SessionControl(prompt="a", instruction="x").then(SessionControl(instruction="y"))
    assert merged == SessionControl(prompt="a", instruction="y")
    assert SessionControl().then(SessionControl(prompt="b")) == SessionControl(prompt="b")
