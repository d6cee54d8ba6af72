"""WebRTC frames after the transport: RTP timestamps become media time, audio goes through the
websocket path's resampler and chunker, video through its frame sampler and patchifier."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from patchstream.model.api import EngineSpec, MediaKind
from patchstream.streaming.chunker import AudioChunker, ChunkerConfig
from patchstream.streaming.peer_media import PeerBatch, PeerClock, PeerFrame, PeerMediaDecoder

VIDEO_SPEC = EngineSpec("fake", media=frozenset({MediaKind.AUDIO, MediaKind.VIDEO}), video_fps=1.0, frame_soft_tokens=70)
OPUS_RATE = 48_000
PACKET = 960  # 20 ms at 48 kHz


def audio_frame(index: int, value: float = 0.25) -> av.AudioFrame:
    """Packet `index` of a 48 kHz stereo s16 track (what aiortc's Opus decoder hands over)."""
    samples = np.full((1, PACKET * 2), int(value * 32767), np.int16)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
    frame.sample_rate, frame.pts, frame.time_base = OPUS_RATE, index * PACKET, Fraction(1, OPUS_RATE)
    return frame


def video_frame(seconds: float, size=(240, 320)) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.full((*size, 3), 128, np.uint8), format="rgb24")
    frame.pts, frame.time_base = round(seconds * 90_000), Fraction(1, 90_000)
    return frame


def decoder(spec: EngineSpec = VIDEO_SPEC, max_pixels: int = 7680 * 4320) -> PeerMediaDecoder:
    return PeerMediaDecoder(spec, AudioChunker(ChunkerConfig.for_engine(spec)), max_pixels)


def test_rtp_time_places_frames_and_the_second_track_starts_at_its_arrival():
    clock = PeerClock()
    assert clock.start_sample("audio", PeerFrame(audio_frame(0), arrived=100.0)) == 0
    assert clock.start_sample("audio", PeerFrame(audio_frame(50), arrived=100.3)) == 16_000  # 1 s by RTP, not by arrival
    assert clock.start_sample("video", PeerFrame(video_frame(0.0), arrived=100.5)) == 8_000
    assert clock.start_sample("video", PeerFrame(video_frame(2.0), arrived=100.6)) == 8_000 + 32_000


def test_audio_becomes_whole_chunks_on_one_timeline_and_a_lost_packet_is_a_filled_gap():
    media = decoder()
    frames = [PeerFrame(audio_frame(i), 10.0 + i * 0.02) for i in range(50) if i != 20]  # packet 20 lost
    out = media.decode(PeerBatch(audio=tuple(frames)))
    chunks = out.chunks + media.flush()
    assert chunks[0].start_sample == 0
    for before, after in zip(chunks, chunks[1:]):
        assert after.start_sample == before.end_sample
    audio = np.concatenate([c.samples for c in chunks])
    assert abs(len(audio) - 16_000) <= 640  # 1 s, the lost packet kept as time
    hole = audio[20 * 320 + 40 : 21 * 320 - 40]  # 16 kHz samples of the lost 20 ms, resampler edges aside
    assert np.abs(hole).max() < 0.05 and np.abs(audio[2000:6000]).min() > 0.2


def test_video_is_sampled_at_the_engines_rate_and_patchified():
    media = decoder()
    media.decode(PeerBatch(audio=(PeerFrame(audio_frame(0), 0.0),)))
    kept = []
    for tenth in range(0, 31, 3):  # a frame every 0.3 s for 3 s
        out = media.decode(PeerBatch(video=PeerFrame(video_frame(tenth / 10), tenth / 10)))
        kept += out.video.frames
    assert [round(f.start_s, 1) for f in kept] == [0.0, 0.9, 1.8, 2.7]  # 1 fps, latest due frame
    assert all(f.pixels.shape[0] % 48 == 0 and f.positions is not None for f in kept)


def test_oversized_video_is_never_resized_and_audio_only_engines_get_no_video():
    media = decoder(max_pixels=100)
    out = media.decode(PeerBatch(video=PeerFrame(video_frame(0.0), 0.0)))
    assert out.video.frames == () and out.video.dropped == 1
    audio_only = decoder(EngineSpec("fake"))
    assert audio_only.decode(PeerBatch(video=PeerFrame(video_frame(0.0), 0.0))).video.frames == ()


def test_video_a_session_did_not_declare_goes_nowhere():
    media = PeerMediaDecoder(VIDEO_SPEC, AudioChunker(), 7680 * 4320, video=False)
    assert media.decode(PeerBatch(video=PeerFrame(video_frame(0.0), 0.0))).video.frames == ()
