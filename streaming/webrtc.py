"""WebRTC ingest: the one server module that imports aiortc (its camelCase stays in here).

It is: one session's peer connection. `PeerConnection.answer` takes the client's SDP offer (from
a `webrtc.offer` message on the session's websocket) and returns the answer with the server's
ICE candidates inside; `add_candidate` takes trickled client candidates. Each incoming track
gets a pump task that awaits aiortc's `recv` in a loop and never waits for anything else:
aiortc's receiver queue is unbounded, so it is drained as fast as frames come, into bounded
buffers with their drop rules beside them (audio: at most `MAX_BUFFERED_AUDIO_S`, the oldest
dropped and counted; video: the newest frame only, latest frame wins). Each delivery calls
`on_media` (the session then takes a `PeerBatch` with `take`); a failed or closed connection or
an ended track calls `on_lost` once with a reason. `close` ends it all.

It is not: the media path (`peer_media.py` resamples, chunks, samples and patchifies the frames,
exactly as the websocket path does) and not a decider (`session_protocol.py` decides what a lost
peer or a silent one means). No STUN or TURN server is configured: nothing is fetched from
outside, and host candidates reach clients on the same network (a browser beside the server,
a LAN). A deployment behind NAT puts a TURN relay in front, which this module does not do.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Callable

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from patchstream.model.api import SAMPLE_RATE
from patchstream.streaming.peer_media import PeerBatch, PeerFrame
from patchstream.streaming.protocol import CodedError, ErrorCode, WebRTCCandidate

log = logging.getLogger(__name__)

MAX_BUFFERED_AUDIO_S = 5.0  # decoded audio waiting for the session's media task; the oldest goes first
CLOSE_TIMEOUT_S = 5.0  # closing DTLS/ICE; then the connection is left to the garbage collector
_LOST_STATES = ("failed", "closed")  # connection states after which no media will come


class PeerConnection:
    """One session's WebRTC peer connection, receive-only."""

    def __init__(self, on_media: Callable[[], None], on_lost: Callable[[str], None]):
        self._on_media = on_media
        self._on_lost = on_lost
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only: nothing outside
        self._pc.on("track", self._track_arrived)
        self._pc.on("connectionstatechange", self._state_changed)
        # Drop rule: at most MAX_BUFFERED_AUDIO_S of audio; beyond it the oldest frames go (counted).
        self._audio: collections.deque[PeerFrame] = collections.deque()
        self._audio_samples = 0  # 16 kHz samples in `_audio`
        self._dropped_samples = 0  # since the last `take`
        self._video: PeerFrame | None = None  # drop rule: latest frame wins
        self._video_received = 0  # video frames the track delivered so far
        self._pumps: set[asyncio.Task] = set()
        self._answered = False
        self._closing = False
        self._lost = False

    @property
    def kinds(self) -> tuple[str, ...]:
        """The media kinds the client's offer sends ("audio", "video")."""
        return tuple(t.kind for t in self._pc.getTransceivers())

    async def answer(self, offer_sdp: str) -> str:
        """The answer SDP to a client's offer; `CodedError` (bad_offer / unsupported_codec) if none."""
        if self._answered:
            raise CodedError(ErrorCode.BAD_OFFER, "this session already has a peer connection; renegotiation is not supported")
        self._answered = True
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except OperationError as error:  # no codec in common for a media section
            raise CodedError(
                ErrorCode.UNSUPPORTED_CODEC,
                f"{error}: the server decodes Opus, G.722, PCMU or PCMA audio and VP8 or H.264 video",
            ) from None
        except (ValueError, InvalidAccessError, InvalidStateError, KeyError, IndexError) as error:
            raise CodedError(ErrorCode.BAD_OFFER, f"the offer is not a usable SDP offer: {error!r}") from None
        if "audio" not in self.kinds:
            raise CodedError(ErrorCode.BAD_OFFER, "the offer has no audio track; captions need a microphone")
        answer = await self._pc.createAnswer()
        await self._pc.setLocalDescription(answer)  # gathers the host candidates into the answer
        return self._pc.localDescription.sdp

    async def add_candidate(self, message: WebRTCCandidate) -> None:
        """One trickled candidate of the client; an empty one ends them. A bad line is `bad_message`."""
        if not message.candidate:
            await self._pc.addIceCandidate(None)
            return
        line = message.candidate.removeprefix("a=").removeprefix("candidate:")
        try:
            candidate = candidate_from_sdp(line)
        except (ValueError, IndexError) as error:
            raise CodedError(ErrorCode.BAD_MESSAGE, f"not an ICE candidate line: {error!r}") from None
        candidate.sdpMid, candidate.sdpMLineIndex = message.sdp_mid, message.sdp_mline_index
        await self._pc.addIceCandidate(candidate)

    def take(self) -> PeerBatch:
        """Everything delivered since the last call (never waits)."""
        batch = PeerBatch(tuple(self._audio), self._video, self._dropped_samples, self._video_received)
        self._audio.clear()
        self._audio_samples = self._dropped_samples = 0
        self._video = None
        return batch

    async def close(self) -> None:
        """Stop the pumps and close the connection (DTLS, ICE). Idempotent."""
        self._closing = True
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self._pumps.clear()
        # A session is ending either way: a transport that fails to close must not fail that end.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._pc.close()

    # -- aiortc's callbacks ----------------------------------------------------------------------

    def _track_arrived(self, track: MediaStreamTrack) -> None:
        if track.kind not in ("audio", "video"):
            return
        pump = asyncio.get_running_loop().create_task(self._pump(track), name=f"webrtc-{track.kind}")
        self._pumps.add(pump)

    def _state_changed(self) -> None:
        state = self._pc.connectionState
        log.debug("peer connection %s", state)
        if state in _LOST_STATES:
            self._lose(f"the WebRTC connection {state}")

    async def _pump(self, track: MediaStreamTrack) -> None:
        """Drain aiortc's queue as fast as frames come; the buffers' drop rules bound what waits."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self._lose(f"the peer's {track.kind} track ended")
                return
            peer = PeerFrame(frame, loop.time())
            if track.kind == "audio":
                self._buffer_audio(peer)
            else:
                self._video = peer
                self._video_received += 1
            self._on_media()

    def _buffer_audio(self, peer: PeerFrame) -> None:
        self._audio.append(peer)
        self._audio_samples += _samples_16k(peer)
        while self._audio_samples > MAX_BUFFERED_AUDIO_S * SAMPLE_RATE and len(self._audio) > 1:
            dropped = _samples_16k(self._audio.popleft())
            self._audio_samples -= dropped
            self._dropped_samples += dropped

    def _lose(self, reason: str) -> None:
        if self._closing or self._lost:
            return
        self._lost = True
        self._on_lost(reason)


def _samples_16k(peer: PeerFrame) -> int:
    return peer.frame.samples * SAMPLE_RATE // peer.frame.sample_rate
