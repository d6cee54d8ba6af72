"""One live captioning session over one websocket: the task plumbing around `SessionProtocol`.

It is: four tasks that carry bytes and time between the websocket, the decoder, the scheduler
and the sans-I/O protocol (`session_protocol.py`), and carry out the protocol's actions:
- the receiver reads client messages, feeds them to the protocol and performs `Open`, `Decode`
  and `FinishMedia` (the bounded media queue makes a fast sender wait: TCP backpressure); a
  server shutdown reaches the protocol through `request_shutdown`;
- the media task decodes and chunks audio, and decodes and patchifies images (on a thread of the
  session's own, so images never hold up other sessions' audio), off the event loop and in
  arrival order, and finishes the engine session;
- the ticker calls `tick` when the protocol's next deadline comes;
- the sender writes the protocol's events to the websocket.
A WebRTC session (`"audio": {"encoding": "webrtc"}`) has no decoder: its media arrives on the
peer connection (`webrtc.py`), which the receiver hands the `webrtc.offer`; each delivery puts
one `PEER_MEDIA` marker in the media queue, and the media task takes the batch and runs it
through `peer_media.py` (resample → the same chunker; frame sampler → patchify) off the loop.
On `Close` the session stops the first three, frees its engine session and decoder, lets the
sender drain (`ended` last) and closes the websocket.

A multichannel session (`start.channels`) opens one engine session per audio channel: each
channel has its own chunker and scheduler slot, and the protocol merges their captions; the
engine never learns that a session has channels. A session of a foreign protocol (Twilio,
AudioHook, OpenAI Realtime) has a `ProtocolAdapter` that turns the client's messages into native
control messages and audio, and the session's events into the client's protocol.

It is not: a decider. Every rule — what a message means, when to time out, which error ends the
session — lives in the protocol; parsing lives in `protocol.py`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from websockets.exceptions import ConnectionClosed

from patchstream.model.api import AudioChunk, EngineError, EngineSpec, SessionControl, VideoFrame
from patchstream.streaming.adapters.adapter import AdapterAudio, ProtocolAdapter
from patchstream.streaming.chunker import AudioChunker, ChunkerConfig, DecodedAudio
from patchstream.streaming.config import LimitsConfig, SchedulerConfig
from patchstream.streaming.decode import AudioDecoder, DecodeError, VideoOptions
from patchstream.streaming.peer_media import PeerMediaDecoder
from patchstream.streaming.protocol import CodedError, Ended, ErrorCode, WebRTCOffer, to_json
from patchstream.streaming.scheduler import Scheduler, SessionSlot
from patchstream.streaming.session_observer import SessionObserver
from patchstream.streaming.assist.service import AssistService
from patchstream.streaming.session_protocol import (
    Action,
    Assist,
    Close,
    Control,
    Decode,
    DecodeFrame,
    Detach,
    FinishMedia,
    Open,
    Reply,
    SessionProtocol,
    Signal,
    Submit,
)
from patchstream.streaming.video_decode import decode_image

log = logging.getLogger(__name__)

MEDIA_QUEUE_FRAMES = 32  # binary frames (audio bytes or images) waiting for decode; a full queue stops reading the socket
END_OF_MEDIA = None  # media-queue marker: no more bytes
PEER_MEDIA = "peer-media"  # media-queue marker: the peer connection delivered frames (at most one queued)
CLOSE_TIMEOUT_S = 5.0  # the websocket closing handshake; then the transport is aborted
TAKE_OVER_TIMEOUT_S = 5.0  # a resume waits this long for the old connection to be noticed as dropped
# Assist work waiting for the assist thread (one per final caption, ~1 ms each). Past this the
# analysis of a new caption is skipped (the caption itself is sent); the summary is never skipped.
ASSIST_BACKLOG = 256


@dataclass(frozen=True)
class SessionContext:
    """What a session borrows from its server."""

    session_id: str  # server-chosen id, also in logs
    scheduler: Scheduler  # owns the model thread
    decode_executor: Executor  # shared threads for decoders that never wait (raw PCM)
    limits: LimitsConfig  # bounds of one session
    scheduler_config: SchedulerConfig  # the stats period
    engine_spec: EngineSpec  # what the engine takes and is called
    # --- issue 13: admission at `start`, resume, journal and metrics ---
    admit: Callable[[], CodedError | None] | None = None  # at `start`: None admits, an error refuses
    observer: SessionObserver | None = None  # journal + metrics; None reports nothing
    resume_token: str | None = None  # sent in `ready`; None: the session cannot be resumed
    resume_grace_s: float = 0.0  # how long a dropped session waits for its client
    assist: AssistService | None = None  # agent assist (streaming/assist/); None: not offered


class Session:
    """Serves one websocket connection from `start` to `ended`."""

    def __init__(self, websocket, context: SessionContext, adapter: ProtocolAdapter | None = None):
        self.ws = websocket
        self.ctx = context
        self.adapter = adapter  # None: the client speaks the native protocol
        loop = asyncio.get_running_loop()
        self.protocol = SessionProtocol(
            context.session_id,
            context.engine_spec,
            context.limits,
            context.scheduler_config.stats_interval_s,
            loop.time(),
            assist=context.assist.open if context.assist is not None else None,
            progress_events=adapter is not None and adapter.progress_events,
            resume_token=context.resume_token,
            resume_grace_s=context.resume_grace_s,
        )
        self._chunkers: list[AudioChunker] = []  # one per engine session (per channel, or one for the mix)
        self._decoder: AudioDecoder | None = None
        self._executor: Executor = context.decode_executor  # a thread of its own for containers
        self._slots: list[SessionSlot] = []  # one engine session per channel (one for the mix)
        self._image_executor: Executor | None = None  # a thread of its own for images: never the shared PCM pool
        # Images wait here as tickets; their bytes wait in the protocol's byte-bounded image queue.
        self._media: asyncio.Queue[bytes | DecodeFrame | None] = asyncio.Queue(MEDIA_QUEUE_FRAMES)
        self._outgoing = asyncio.Event()  # the protocol may have events to send
        self._deadline_moved = asyncio.Event()  # the protocol's next deadline came earlier
        self._tick_at: float | None = None  # the deadline the ticker sleeps towards
        self._finishing: asyncio.Task | None = None  # puts the end marker after a shutdown request
        self._closing = asyncio.Event()  # the protocol said Close
        self._client_gone = False
        # Drop rule for controls: at most one waits, later ones merged into it field by field
        # (latest wins), so a client flooding `control` costs one engine call at a time.
        self._pending_control: SessionControl | None = None
        self._controlling: asyncio.Task | None = None  # applies the pending control on the model thread
        # Resume: the tasks bound to the current websocket, replaced when a client resumes.
        self._receiver: asyncio.Task | None = None
        self._sender: asyncio.Task | None = None
        self._connection_done = asyncio.Event()  # the current websocket is finished with (detached or closed)
        self._finals_reported = 0  # protocol finals already handed to the observer (journal)
        self._peer = None  # WebRTC sessions: the `webrtc.PeerConnection` (aiortc is imported only for them)
        self._peer_decoder: PeerMediaDecoder | None = None  # WebRTC sessions: frames → chunks and patchified frames
        self._peer_media_queued = False  # a PEER_MEDIA marker waits in the media queue
        self._assist_work: asyncio.Queue[Assist] = asyncio.Queue()  # bounded by ASSIST_BACKLOG in `_apply`

    def request_shutdown(self) -> None:
        """The server is stopping: the protocol says so and finishes like on `stop`."""
        for action in self._apply(self.protocol.shutdown()):
            # FinishMedia: the end marker queues behind media the receiver is still putting.
            self._finishing = asyncio.create_task(self._perform(action), name=f"{self.ctx.session_id}-finish")

    async def run(self) -> None:
        name = self.ctx.session_id
        if self.adapter is not None:
            await self._take(self.adapter.connected())
        workers = [
            asyncio.create_task(self._guarded(self._media_loop()), name=f"{name}-media"),
            asyncio.create_task(self._guarded(self._tick_loop()), name=f"{name}-tick"),
            asyncio.create_task(self._guarded(self._assist_loop()), name=f"{name}-assist"),
        ]
        self._start_connection_tasks()
        try:
            await self._closing.wait()
            await _cancel([*workers, self._receiver])
            await asyncio.shield(self._release())
            if not self._client_gone:
                await self._drain_and_close(self._sender)
        finally:
            extra = [task for task in (self._finishing, self._controlling) if task is not None]
            await _cancel([*workers, self._receiver, self._sender, *extra])
            await asyncio.shield(self._release())  # a cancelled session still frees its engine state
            self._connection_done.set()

    def _start_connection_tasks(self) -> None:
        name = self.ctx.session_id
        self._receiver = asyncio.create_task(self._guarded(self._receive()), name=f"{name}-recv")
        self._sender = asyncio.create_task(self._guarded(self._send_loop()), name=f"{name}-send")

    # -- resume (issue 13) -------------------------------------------------------------------------

    async def attach(self, websocket, finals_received: int) -> asyncio.Event:
        """A client resumes this session on `websocket`: it gets `resumed` and the finals it
        missed, then the session goes on. Returns the event set when this websocket is done.
        ProtocolError (`resume_failed`) when the session cannot be resumed."""
        if not self.protocol.detached and self.protocol.resumable:
            # The client knows its old connection is dead before the server does: drop it now.
            self.ws.transport.abort()
            try:
                async with asyncio.timeout(TAKE_OVER_TIMEOUT_S):
                    await self._connection_done.wait()
            except TimeoutError:
                pass
        actions = self.protocol.attach(finals_received, asyncio.get_running_loop().time())
        self.ws = websocket
        self._connection_done = asyncio.Event()
        self._start_connection_tasks()
        self._apply(actions)
        return self._connection_done

    def _detach(self) -> None:
        """The websocket dropped; the engine session, decoding and the outbox carry on."""
        current = asyncio.current_task()
        for task in (self._receiver, self._sender):
            if task is not None and task is not current:
                task.cancel()
        self._connection_done.set()
        log.info("session %s: client dropped; waiting for it to resume", self.ctx.session_id)

    # -- carrying out actions --------------------------------------------------------------------

    def _apply(self, actions: Sequence[Action]) -> list[Action]:
        """Do the actions that need no waiting; return the ones only the receiver may await."""
        later: list[Action] = []
        for action in actions:
            if isinstance(action, Submit):
                if action.channel >= len(self._slots):
                    continue  # released: the session is closing
                dropped = self.ctx.scheduler.submit(self._slots[action.channel], action.chunk)
                if self.ctx.observer is not None and action.channel == 0 and isinstance(action.chunk, AudioChunk):
                    self.ctx.observer.submitted(action.chunk.end_sample, asyncio.get_running_loop().time())
                if dropped:
                    if self.ctx.observer is not None:
                        self.ctx.observer.audio_dropped(dropped)
                    later += self._apply(self.protocol.audio_dropped(dropped))
            elif isinstance(action, Control):
                waiting = self._pending_control
                self._pending_control = action.control if waiting is None else waiting.then(action.control)
                if self._controlling is None or self._controlling.done():
                    self._controlling = asyncio.create_task(self._control(), name=f"{self.ctx.session_id}-control")
            elif isinstance(action, Assist):
                if action.last or self._assist_work.qsize() < ASSIST_BACKLOG:
                    self._assist_work.put_nowait(action)
            elif isinstance(action, Close):
                self._client_gone = self._client_gone or action.client_gone
                self._closing.set()
            elif isinstance(action, Detach):
                self._detach()
            else:
                later.append(action)
        finals = self.protocol.finals
        if self.ctx.observer is not None and len(finals) > self._finals_reported:
            self.ctx.observer.finals(finals[self._finals_reported :], asyncio.get_running_loop().time())
        self._finals_reported = len(finals)
        self._outgoing.set()
        deadline = self.protocol.next_deadline()
        if deadline is not None and (self._tick_at is None or deadline < self._tick_at):
            self._deadline_moved.set()
        return later

    async def _perform(self, action: Action) -> None:
        if isinstance(action, Open):
            await self._open(action)
        elif isinstance(action, (Decode, DecodeFrame)):
            await self._media.put(action if isinstance(action, DecodeFrame) else action.data)
        elif isinstance(action, FinishMedia):
            await self._media.put(END_OF_MEDIA)
        elif isinstance(action, Signal):
            await self._signal(action)

    async def _open(self, action: Open) -> None:
        loop = asyncio.get_running_loop()
        refusal = self.ctx.admit() if self.ctx.admit is not None else None
        if refusal is not None:  # over capacity or over the key's quota: refused at `start`
            self._apply(self.protocol.open_failed(refusal))
            return
        if action.start.audio.is_webrtc:
            await self._open_peer(action)
            return
        try:
            video = action.start.video
            spec = self.ctx.engine_spec
            options = (
                VideoOptions(spec.video_fps, spec.frame_soft_tokens, self.ctx.limits.max_image_pixels)
                if video is not None and not video.is_image
                else None
            )
            self._decoder = await loop.run_in_executor(
                self.ctx.decode_executor, functools.partial(AudioDecoder, action.start.audio, video=options)
            )
            if self._decoder.waits_for_demuxer:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.ctx.session_id}-decode")
            if video is not None and video.is_image:
                self._image_executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.ctx.session_id}-image")
            await self._open_engine_sessions(action)
        except DecodeError as error:
            self._apply(self.protocol.open_failed(error))
            return
        except EngineError as error:  # options this engine cannot serve (e.g. a language)
            self._apply(self.protocol.open_failed(CodedError(ErrorCode.BAD_START, str(error))))
            return
        self._apply(self.protocol.opened(loop.time()))

    async def _open_peer(self, action: Open) -> None:
        """A WebRTC session: a peer connection (answered when the offer comes) instead of a decoder."""
        loop = asyncio.get_running_loop()
        try:
            from patchstream.streaming import webrtc  # noqa: PLC0415 - aiortc only for WebRTC sessions
        except ImportError:
            error = CodedError(ErrorCode.UNSUPPORTED_ENCODING, "this server was installed without WebRTC (the `webrtc` extra)")
            self._apply(self.protocol.open_failed(error))
            return
        if len(self.protocol.channel_labels) > 1:
            error = CodedError(ErrorCode.BAD_START, "`channels` needs pcm or container audio: WebRTC media is captioned as one mix")
            self._apply(self.protocol.open_failed(error))
            return
        try:
            await self._open_engine_sessions(action)
        except EngineError as error:
            self._apply(self.protocol.open_failed(CodedError(ErrorCode.BAD_START, str(error))))
            return
        self._peer_decoder = PeerMediaDecoder(
            self.ctx.engine_spec, self._chunkers[0], self.ctx.limits.max_image_pixels, video=action.start.video is not None
        )
        self._peer = webrtc.PeerConnection(self._peer_delivered, self._peer_lost)
        self._apply(self.protocol.opened(loop.time()))

    async def _open_engine_sessions(self, action: Open) -> None:
        """One chunker and one engine session per captioned channel (one for the mix)."""
        for channel in range(len(self.protocol.channel_labels)):
            self._chunkers.append(AudioChunker(ChunkerConfig.for_engine(self.ctx.engine_spec)))
            on_result = functools.partial(self._on_result, channel=channel)
            self._slots.append(
                await self.ctx.scheduler.open(action.options, on_result, self._on_failure, self.ctx.limits.max_backlog_s)
            )

    async def _signal(self, action: Signal) -> None:
        loop = asyncio.get_running_loop()
        try:
            if isinstance(action.message, WebRTCOffer):
                sdp = await self._peer.answer(action.message.sdp)
                self._apply(self.protocol.answered(sdp, loop.time()))
            else:
                await self._peer.add_candidate(action.message)
        except CodedError as error:
            self._apply(self.protocol.signal_failed(error))

    def _peer_delivered(self) -> None:
        """The peer connection has frames: one marker in the media queue fetches them all."""
        if self._peer_media_queued:
            return
        try:
            self._media.put_nowait(PEER_MEDIA)  # never waits: a WebRTC session queues no bytes
        except asyncio.QueueFull:
            return  # the next delivery tries again
        self._peer_media_queued = True

    def _peer_lost(self, reason: str) -> None:
        self._apply(self.protocol.peer_lost(reason))

    async def _decode_peer_media(self) -> None:
        """Take what the peer connection delivered and run it through the media path, off-loop."""
        loop = asyncio.get_running_loop()
        self._peer_media_queued = False
        batch = self._peer.take()
        if not batch.audio and batch.video is None:
            return
        self._apply(self.protocol.peer_media(loop.time()))
        if batch.dropped_audio_samples:
            self._apply(self.protocol.audio_dropped(batch.dropped_audio_samples))
        output = await loop.run_in_executor(self.ctx.decode_executor, self._peer_decoder.decode, batch)
        self._apply(self.protocol.decoded(output.chunks))
        self._apply(self.protocol.container_video(output.video))

    async def _control(self) -> None:
        while self._pending_control is not None and self._slots:
            control, self._pending_control = self._pending_control, None
            try:
                for slot in list(self._slots):
                    await self.ctx.scheduler.control(slot, control)
            except Exception as error:  # noqa: BLE001 - a refused change leaves the session as it was
                self._apply(self.protocol.control_failed(error))

    def _on_result(self, result, channel: int = 0) -> None:
        self._apply(self.protocol.engine_result(result, channel))

    def _on_failure(self, error: Exception) -> None:
        self._apply(self.protocol.engine_failed(error))

    # -- the tasks -------------------------------------------------------------------------------

    async def _guarded(self, work) -> None:
        """Run one task; a lost connection or a bug ends this session, never the server."""
        try:
            await work
        except ConnectionClosed:
            self._apply(self.protocol.detach(asyncio.get_running_loop().time()))
        except Exception as error:  # noqa: BLE001 - one session's bug must not reach the server
            log.exception("session %s failed", self.ctx.session_id)
            self._apply(self.protocol.internal_error(error))

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while self.protocol.receiving:
            # Awaited directly: when messages are buffered it returns without yielding, so a
            # flood of messages fills the outbox faster than a client that does not read drains it.
            message = await self.ws.recv()
            if self.adapter is not None:
                self.protocol.touch(loop.time())
                inputs = self.adapter.receive_bytes(message) if isinstance(message, bytes) else self.adapter.receive_text(message)
                await self._take(inputs)
                continue
            if isinstance(message, bytes):
                actions = self.protocol.receive_bytes(message, loop.time())
            else:
                actions = self.protocol.receive_text(message, loop.time())
            for action in self._apply(actions):
                await self._perform(action)

    async def _take(self, inputs) -> None:
        """An adapter's translation of one client message → the protocol, one input after the
        other (a `start` is opened before the audio that follows it in the same message)."""
        loop = asyncio.get_running_loop()
        for item in inputs:
            if isinstance(item, Reply):
                actions = self.protocol.reply(item.text)
            elif isinstance(item, AdapterAudio):
                actions = self.protocol.receive_bytes(item.data, loop.time())
            else:
                actions = self.protocol.receive_control(item, loop.time())
            for action in self._apply(actions):
                await self._perform(action)

    async def _media_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self._media.get()
            if self._peer is not None and (data is PEER_MEDIA or data is END_OF_MEDIA):
                await self._decode_peer_media()
                if data is PEER_MEDIA:
                    continue
            if isinstance(data, DecodeFrame):
                await self._decode_frame(data)
                continue
            try:
                by_channel = await loop.run_in_executor(self._executor, self._decode_and_chunk, data)
            except DecodeError as error:
                self._apply(self.protocol.media_failed(error))
                return
            for channel, chunks in enumerate(by_channel):
                self._apply(self.protocol.decoded(chunks, channel))
            if self._decoder is not None:
                self._apply(self.protocol.container_video(self._decoder.take_video()))
            if data is END_OF_MEDIA:
                break
        for channel, slot in enumerate(list(self._slots)):
            try:
                result = await self.ctx.scheduler.finish(slot)
            except Exception as error:  # noqa: BLE001 - reported to this session only
                self._apply(self.protocol.engine_failed(error))
                return
            self._apply(self.protocol.finished(result, channel))

    async def _decode_frame(self, action: DecodeFrame) -> None:
        """One image, decoded and patchified on the session's image thread; a bad one costs only itself."""
        image = self.protocol.take_frame(action.ticket)
        if image is None or self._image_executor is None:
            return
        loop = asyncio.get_running_loop()
        budget = self.ctx.engine_spec.frame_soft_tokens
        try:
            frame: VideoFrame = await loop.run_in_executor(
                self._image_executor, decode_image, image.data, image.info, image.start_sample, budget
            )
        except CodedError as error:
            self._apply(self.protocol.frame_failed(error))
            return
        self._apply(self.protocol.frame_decoded(frame))

    def _decode_and_chunk(self, data: bytes | None) -> list[list[AudioChunk]]:
        """Decoder thread: bytes (or the end of media) → whole chunks, one list per engine session
        (per channel, or one of the mix). Called one at a time."""
        if data is END_OF_MEDIA and self._peer_decoder is not None:
            return [self._peer_decoder.flush()]  # WebRTC: one engine session, the mix
        decoded = self._decoder.flush() if data is END_OF_MEDIA else self._decoder.decode(data)
        by_channel: list[list[AudioChunk]] = [[] for _ in self._chunkers]
        for audio in decoded:
            for channel, piece in enumerate(self._split(audio)):
                by_channel[channel] += self._chunkers[channel].push(piece)
        if data is END_OF_MEDIA:
            for channel, chunker in enumerate(self._chunkers):
                by_channel[channel] += chunker.flush()
        return by_channel

    def _split(self, audio: DecodedAudio) -> list[DecodedAudio]:
        """One piece per engine session: each channel apart (multichannel), or all for the mix."""
        if len(self._chunkers) == 1:
            return [audio]
        if audio.samples.shape[0] != len(self._chunkers):
            raise DecodeError(
                ErrorCode.BAD_FORMAT,
                f"the audio has {audio.samples.shape[0]} channels but `channels` names {len(self._chunkers)}",
            )
        return [DecodedAudio(audio.samples[index : index + 1], audio.start_sample) for index in range(len(self._chunkers))]

    async def _assist_loop(self) -> None:
        """Agent assist's work, in caption order, on the assist thread; a failure costs only assist."""
        loop = asyncio.get_running_loop()
        while True:
            action = await self._assist_work.get()
            try:
                events = await loop.run_in_executor(self.ctx.assist.executor, action.work)
            except Exception as error:  # noqa: BLE001 - reported to this session; captions go on
                log.warning("session %s: agent assist failed: %s", self.ctx.session_id, type(error).__name__)
                self._apply(self.protocol.assist_failed(error, action.last))
                continue
            self._apply(self.protocol.assisted(events, action.last))

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._tick_at = self.protocol.next_deadline()
            self._deadline_moved.clear()
            delay = None if self._tick_at is None else max(0.0, self._tick_at - loop.time())
            try:
                async with asyncio.timeout(delay):
                    await self._deadline_moved.wait()
            except TimeoutError:
                pass
            backlog_s = max((slot.backlog_s for slot in self._slots), default=0.0)
            frames_dropped = sum(slot.frames_dropped for slot in self._slots)
            for action in self._apply(self.protocol.tick(loop.time(), backlog_s, frames_dropped)):
                await self._perform(action)  # FinishMedia when a dropped client's grace period ends

    async def _send_loop(self) -> None:
        timeout = self.ctx.limits.send_timeout_s
        while True:
            event = self.protocol.next_event()
            if event is None:
                self._outgoing.clear()
                await self._outgoing.wait()
                continue
            try:
                async with asyncio.timeout(timeout):
                    for text in self._wire(event):
                        await self.ws.send(text)
            except TimeoutError:
                log.warning("session %s: client stopped reading for %g s; closing", self.ctx.session_id, timeout)
                self.ws.transport.abort()
                self._apply(self.protocol.connection_lost())
                return
            if self.ctx.observer is not None:
                self.ctx.observer.sent(event)
            if isinstance(event, Ended):
                return

    def _wire(self, event) -> list[str]:
        """The messages one queued event becomes on this session's websocket."""
        if isinstance(event, Reply):
            return [event.text]
        if self.adapter is not None:
            return self.adapter.send(event)
        return [to_json(event)]

    # -- the end ---------------------------------------------------------------------------------

    async def _drain_and_close(self, sender: asyncio.Task) -> None:
        try:
            async with asyncio.timeout(self.ctx.limits.send_timeout_s):
                await asyncio.shield(sender)
        except TimeoutError:
            pass
        if self._client_gone:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ws.close()
        except (TimeoutError, ConnectionClosed):
            self.ws.transport.abort()

    async def _release(self) -> None:
        if self._peer is not None:
            peer, self._peer = self._peer, None
            await peer.close()
        while self._slots:
            await self.ctx.scheduler.close(self._slots.pop())
        if self._decoder is not None:
            decoder, self._decoder = self._decoder, None
            # On the session's own thread when it has one: close waits for the demux thread.
            await asyncio.get_running_loop().run_in_executor(self._executor, decoder.close)
        if self._executor is not self.ctx.decode_executor:
            self._executor.shutdown(wait=False)
            self._executor = self.ctx.decode_executor
        if self._image_executor is not None:
            self._image_executor.shutdown(wait=False)
            self._image_executor = None


async def _cancel(tasks: Sequence[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
