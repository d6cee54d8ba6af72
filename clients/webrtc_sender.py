"""Stream a file to the server over WebRTC: the clients' one aiortc importer.

It is: `WebRTCSession`, the websocket session of `stream_client.py` with its media moved onto a
peer connection. It sends `start` with `"audio": {"encoding": "webrtc"}`, and after `ready` an
offer (`webrtc.offer`, candidates inside) carrying an audio track that plays the file's 16 kHz
PCM at real-time pace; it applies the server's `webrtc.answer`, sends `stop` once the file has
played, and receives events exactly as the websocket session does. `PcmTrack` and `ImageTrack`
are the media sources (aiortc encodes them to Opus and VP8); tests use them with synthetic
media.

It is not: a browser (clients/web/ is) and not a server part; of the server it knows only the
wire protocol. WebRTC is live media: there is no `--fast` over it.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Awaitable, Callable

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from patchstream.clients.stream_client import READ_BATCH_FRAMES, WIRE_SAMPLE_RATE, ClientError, _Session
from patchstream.streaming.protocol import (
    AudioFormat,
    ParsedEvent,
    StartMessage,
    StopMessage,
    WebRTCOffer,
    control_to_json,
)

PACKET_S = 0.02  # one audio frame handed to the Opus encoder: 20 ms, WebRTC's usual packet
VIDEO_CLOCK = 90_000  # Hz: the RTP clock of video
ANSWER_TIMEOUT_S = 20.0  # the server's answer to the offer
# Silence sent after the file before `stop`: `stop` travels on the websocket and could overtake
# the last speech packets still in the jitter buffers.
TAIL_S = 0.5

PcmSource = Callable[[], Awaitable[np.ndarray | None]]  # next int16 mono samples at `rate`; None: the end


class PcmTrack(MediaStreamTrack):
    """Mono int16 PCM from `source`, paced like a microphone; after the source ends, silence
    (`finished` is set), so the peer keeps sending until the session says `stop`."""

    kind = "audio"

    def __init__(self, source: PcmSource, rate: int = WIRE_SAMPLE_RATE, on_start: Callable[[], None] | None = None):
        super().__init__()
        self.rate = rate
        self._on_start = on_start  # called as the first sample goes out: media time 0 on this clock
        self.finished = asyncio.Event()  # every sample of the source went out
        self.sent_samples = 0  # source samples sent (silence after the end not counted)
        self._source = source
        self._buffer = np.zeros(0, np.int16)
        self._packet = int(rate * PACKET_S)
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
            if self._on_start is not None:
                self._on_start()
        delay = self._start + self._pts / self.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # absolute deadlines: a late wake-up never accumulates drift
        while len(self._buffer) < self._packet and not self.finished.is_set():
            more = await self._source()
            if more is None:
                self.finished.set()
            else:
                self._buffer = np.concatenate([self._buffer, np.asarray(more, np.int16)])
        samples, self._buffer = self._buffer[: self._packet], self._buffer[self._packet :]
        self.sent_samples += len(samples)
        samples = np.pad(samples, (0, self._packet - len(samples)))
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self._pts, fractions.Fraction(1, self.rate)
        self._pts += self._packet
        return frame


class ImageTrack(MediaStreamTrack):
    """Video from `picture(t)` (RGB uint8 (H, W, 3) at media second t), paced at `fps`."""

    kind = "video"

    def __init__(self, picture: Callable[[float], np.ndarray], fps: float = 10.0):
        super().__init__()
        self._picture = picture
        self._fps = fps
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        t = self._index / self._fps
        delay = self._start + t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame.from_ndarray(self._picture(t), format="rgb24")
        frame.pts, frame.time_base = round(t * VIDEO_CLOCK), fractions.Fraction(1, VIDEO_CLOCK)
        self._index += 1
        return frame


def new_peer_connection() -> RTCPeerConnection:
    """A peer connection with host candidates only (no STUN server: nothing outside is reached)."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def offer_for(pc: RTCPeerConnection) -> WebRTCOffer:
    """The `webrtc.offer` for a connection whose tracks are added (candidates gathered inside)."""
    await pc.setLocalDescription(await pc.createOffer())
    return WebRTCOffer(pc.localDescription.sdp)


async def apply_answer(pc: RTCPeerConnection, sdp: str) -> None:
    await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))


class WebRTCSession(_Session):
    """`stream_client`'s session with the audio on a peer connection instead of binary frames."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def _start_message(self) -> str:
        options = self._options
        return control_to_json(
            StartMessage(
                audio=AudioFormat("webrtc"),
                language=options.language,
                prompt=options.prompt,
                interim_results=options.interim_results,
                stats=options.stats,
            )
        )

    def _track(self, event: ParsedEvent) -> None:
        super()._track(event)
        if event.type == "webrtc.answer" and not self._answer.done():
            self._answer.set_result(str(event.fields.get("sdp", "")))

    async def _send_audio(self) -> None:
        if self._options.fast:
            raise ClientError("WebRTC carries live media: --fast needs the websocket transport")
        await self._ready.wait()
        loop = asyncio.get_running_loop()

        async def next_pcm() -> np.ndarray | None:
            frames = await loop.run_in_executor(None, self._reader.read, READ_BATCH_FRAMES)
            return np.frombuffer(b"".join(frames), "<i2") if frames else None

        def media_time_zero() -> None:
            # `client_time_s` counts from media time 0: here the first sample sent, not `ready`
            # (the peer connection is set up in between), so latencies compare across transports.
            self._origin = time.monotonic()

        pc = new_peer_connection()
        track = PcmTrack(next_pcm, on_start=media_time_zero)
        pc.addTrack(track)
        try:
            await self._ws.send(control_to_json(await offer_for(pc)))
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await apply_answer(pc, await self._answer)
            await track.finished.wait()
            self._sent_samples = track.sent_samples
            await asyncio.sleep(TAIL_S)
            await self._ws.send(control_to_json(StopMessage()))
            await asyncio.Event().wait()  # the peer stays up until `ended` (the session cancels this task)
        finally:
            await pc.close()

