"""Decoded WebRTC media → the websocket path's chunks and patchified frames, on one media clock.

It is: what happens to a peer connection's frames after the transport, and nothing
WebRTC-specific beyond their timestamps. aiortc (in `webrtc.py`) hands over `av.AudioFrame`s
(Opus already decoded to PCM) and `av.VideoFrame`s (VP8/H.264 already decoded), each with its
RTP timestamp as `pts` (counted from the track's first packet) and the loop time it arrived.
`PeerClock` turns those into 16 kHz media time; `PeerMediaDecoder` then runs the very code the
websocket path runs: `decode.FrameResampler` (PyAV's resampler, the byte decoders' clock) →
`chunker.AudioChunker` for audio, `frames.FrameSampler` (the engine's rate) →
`video_decode.patchify` for video, reported as a container's video track is (`ContainerVideo`:
the due frames and the running counts), since a WebRTC video track is sampled where it enters
just as a demuxed one is.

Time travels with the data: within a track, media time comes from the RTP timestamps alone, so
a lost packet leaves a gap the chunker fills with silence rather than pulling later audio
earlier. Only where each track starts is taken from arrival: media time 0 is the arrival of the
first frame of either track and the other track's first frame is placed at its own arrival
(RTCP sender reports would align them exactly; aiortc does not expose them, and at the engines'
one frame per second the arrival's few tens of milliseconds do not matter).

It is not: async and holds no sockets. The session calls `decode` off the event loop, one call
at a time; it never imports aiortc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import av

from patchstream.model.api import AudioChunk, EngineSpec, VideoFrame, seconds_to_samples
from patchstream.streaming.chunker import AudioChunker
from patchstream.streaming.decode import FrameResampler
from patchstream.streaming.frames import ContainerVideo, FrameSampler
from patchstream.streaming.protocol import CodedError
from patchstream.streaming.video_decode import patchify


@dataclass(frozen=True)
class PeerFrame:
    """One decoded frame of a peer connection's track."""

    frame: av.AudioFrame | av.VideoFrame  # pts: RTP time since the track's first packet
    arrived: float  # loop seconds when the track delivered it (only a track's first frame uses it)


@dataclass(frozen=True)
class PeerBatch:
    """Everything the peer connection delivered since the last batch."""

    audio: tuple[PeerFrame, ...] = ()  # in arrival order, every frame (bounded upstream in seconds)
    video: PeerFrame | None = None  # the newest frame only: latest frame wins
    dropped_audio_samples: int = 0  # 16 kHz samples dropped upstream because decode fell behind
    video_received: int = 0  # video frames the track has delivered so far (taken or replaced)


@dataclass(frozen=True)
class PeerOutput:
    """What one batch became."""

    chunks: list[AudioChunk] = field(default_factory=list)  # whole chunks, as the websocket path makes them
    video: ContainerVideo = ContainerVideo()  # patchified frames due at the engine's rate, running counts


class PeerClock:
    """Each track's `pts` → 16 kHz media time on the session's one clock."""

    def __init__(self) -> None:
        self._origin: float | None = None  # arrival of the first frame of any track: media time 0
        self._tracks: dict[str, tuple[Fraction, float]] = {}  # kind → (first pts in s, its media s)

    def start_sample(self, kind: str, frame: PeerFrame) -> int:
        pts = frame.frame.pts or 0
        seconds = Fraction(pts) * (frame.frame.time_base or Fraction(1))
        if self._origin is None:
            self._origin = frame.arrived
        if kind not in self._tracks:
            self._tracks[kind] = (seconds, frame.arrived - self._origin)
        first, placed_at = self._tracks[kind]
        return seconds_to_samples(placed_at + float(seconds - first))


class PeerMediaDecoder:
    """One WebRTC session's media path after the transport. Not thread-safe; one call at a time."""

    def __init__(self, spec: EngineSpec, chunker: AudioChunker, max_pixels: int, video: bool = True) -> None:
        self._clock = PeerClock()
        self._resampler = FrameResampler()
        self._chunker = chunker  # the session's: the same one the websocket path would use
        # None: no video goes on (the engine takes none, or the session's `start` declared none).
        self._sampler = FrameSampler(spec.video_fps) if video and spec.video_fps > 0 else None
        self._soft_tokens = spec.frame_soft_tokens
        self._max_pixels = max_pixels
        self._dropped = 0  # video frames dropped so far: over the pixel limit, or not convertible

    def decode(self, batch: PeerBatch) -> PeerOutput:
        chunks: list[AudioChunk] = []
        for peer in batch.audio:
            for audio in self._resampler.push(peer.frame, self._clock.start_sample("audio", peer)):
                chunks.extend(self._chunker.push(audio))
        frames = [] if batch.video is None or self._sampler is None else self._video(batch.video)
        return PeerOutput(chunks, ContainerVideo(tuple(frames), batch.video_received, self._dropped))

    def _video(self, peer: PeerFrame) -> list[VideoFrame]:
        frame = peer.frame
        start_sample = self._clock.start_sample("video", peer)
        if frame.width * frame.height > self._max_pixels:
            self._dropped += 1
            return []
        if not self._sampler.admit(start_sample):
            return []
        try:
            return [patchify(frame, start_sample, self._soft_tokens)]
        except CodedError:  # a picture PyAV cannot convert: this frame only
            self._dropped += 1
            return []

    def flush(self) -> list[AudioChunk]:
        """End of stream: the resampler's tail, then the chunker's last partial chunk padded."""
        chunks = [chunk for audio in self._resampler.flush() for chunk in self._chunker.push(audio)]
        return chunks + self._chunker.flush()
