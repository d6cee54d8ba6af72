"""One live captioning session over one websocket: the thin async shell around the sans-I/O parts.

It reads control and audio frames, decodes audio off the event loop, cuts it into 40 ms chunks,
hands them to the scheduler, turns engine updates into caption events through the caption policy,
and sends events through a bounded outbox. It owns no model work and no parsing logic.

Tasks of a session: the receiver (control handled as soon as it is read), the media pipeline
(decode → chunk → scheduler; its queue is bounded so a fast sender is slowed by TCP backpressure),
the sender (outbox → websocket) and the stats ticker. Any fatal problem ends only this session.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed

from patchstream.model.api import AudioChunk, CaptionUpdate, EngineError, EngineSpec, samples_to_seconds
from patchstream.streaming.chunker import AudioChunker
from patchstream.streaming.config import LimitsConfig, SchedulerConfig
from patchstream.streaming.decode import AudioDecoder, DecodeError
from patchstream.streaming.events import CodedError, Ended, Error, Event, Ready, Stats, to_json
from patchstream.streaming.outbox import Outbox, OutboxOverflow
from patchstream.streaming.policy import CaptionPolicy, CaptionPolicyConfig
from patchstream.streaming.scheduler import Scheduler, SessionSlot
from patchstream.streaming.wire import ProtocolError, StartMessage, StopMessage, parse_control

log = logging.getLogger(__name__)

MEDIA_QUEUE_FRAMES = 32  # binary frames waiting for decode; a full queue stops reading the socket
END_OF_MEDIA = None  # media-queue marker: the client sent `stop`
# A `start` that cannot be served ends the session; other bad messages are only rejected.
FATAL_START_ERRORS = frozenset({"bad_start", "unsupported_encoding", "bad_format", "unsupported_task"})
ENDED_REASON_BY_CODE = {"idle_timeout": "idle", "session_limit": "limit", "shutting_down": "shutdown"}


class SessionFatal(CodedError):
    """Ends the session with an error event (code, message)."""


@dataclass(frozen=True)
class SessionContext:
    """What a session borrows from its server."""

    session_id: str
    scheduler: Scheduler
    decode_executor: Executor  # PyAV decoding runs here, never on the event loop
    limits: LimitsConfig
    scheduler_config: SchedulerConfig
    engine_spec: EngineSpec


class Session:
    """Serves one websocket connection from `start` to `ended`."""

    def __init__(self, websocket, context: SessionContext):
        self.ws = websocket
        self.ctx = context
        self.outbox = Outbox(context.limits.max_pending_finals)
        self.policy: CaptionPolicy | None = None
        self.slot: SessionSlot | None = None
        self.decoder: AudioDecoder | None = None
        self.chunker = AudioChunker()
        self.start: StartMessage | None = None
        self._media: asyncio.Queue[bytes | None] = asyncio.Queue(MEDIA_QUEUE_FRAMES)
        self._fatal: asyncio.Future[SessionFatal] = asyncio.get_running_loop().create_future()
        self._shutdown = asyncio.Event()
        self._client_gone = False
        self._received_samples = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop(), name=f"{self.ctx.session_id}-send")
        try:
            reason = await self._serve()
            await self._end(sender, reason)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _serve(self) -> str:
        """Run the session until it ends; returns the `ended` reason. Never raises but cancellation."""
        ticker: asyncio.Task | None = None
        try:
            self.start = await self._await_start()
            await self._open(self.start)
            self.outbox.put(Ready(self.ctx.session_id, self.ctx.engine_spec.name, self.ctx.engine_spec.sample_rate))
            if self.start.stats:
                ticker = asyncio.create_task(self._stats_loop(), name=f"{self.ctx.session_id}-stats")
            return await self._stream()
        except SessionFatal as fatal:
            self._flush_committed()
            self._put_error(fatal.code, fatal.message, fatal=True)
            return ENDED_REASON_BY_CODE.get(fatal.code, "error")
        except ConnectionClosed:
            self._client_gone = True
            return "error"
        except Exception as error:  # noqa: BLE001 - one session's bug must not reach the server
            log.exception("session %s failed", self.ctx.session_id)
            self._put_error("internal_error", f"internal server error: {error!r}", fatal=True)
            return "error"
        finally:
            if ticker is not None:
                ticker.cancel()
            # Shielded: a cancelled session still frees its engine state and demux thread.
            await asyncio.shield(self._release())

    def request_shutdown(self) -> None:
        """The server is stopping: finish like a `stop`, flushing finals, then end."""
        self._shutdown.set()

    def _flush_committed(self) -> None:
        """Before a fatal end, close the open caption: committed words always reach a final."""
        if self.policy is not None and not self._client_gone:
            for event in self.policy.finish(CaptionUpdate()):
                self._put(event)

    async def _end(self, sender: asyncio.Task, reason: str) -> None:
        if self._client_gone:
            return
        received = samples_to_seconds(self._received_samples)
        finals = self.policy.finals_emitted if self.policy else 0
        try:
            self.outbox.put(Ended(reason, received, finals))
            async with asyncio.timeout(self.ctx.limits.send_timeout_s):
                await asyncio.shield(sender)
        except (OutboxOverflow, TimeoutError):
            pass
        if self._client_gone:
            return
        try:
            async with asyncio.timeout(5.0):
                await self.ws.close()
        except (TimeoutError, ConnectionClosed):
            self.ws.transport.abort()

    async def _release(self) -> None:
        if self.slot is not None:
            slot, self.slot = self.slot, None
            await self.ctx.scheduler.close(slot)
        if self.decoder is not None:
            decoder, self.decoder = self.decoder, None
            await asyncio.get_running_loop().run_in_executor(self.ctx.decode_executor, decoder.close)

    # -- start -----------------------------------------------------------------------------------

    async def _await_start(self) -> StartMessage:
        deadline = asyncio.get_running_loop().time() + self.ctx.limits.start_timeout_s
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise SessionFatal("start_timeout", f"no `start` message within {self.ctx.limits.start_timeout_s:g} s")
            message = await self._recv_before_start(remaining)
            if message is None:
                continue
            if isinstance(message, bytes):
                self._put_error("not_started", "binary audio received before `start`; send `start` first")
                continue
            control = self._parse(message)
            if isinstance(control, StopMessage):
                self._put_error("not_started", "`stop` received before `start`")
            elif control is not None:
                return control

    async def _recv_before_start(self, timeout: float) -> str | bytes | None:
        """The next message, None on timeout; a server shutdown ends the wait at once."""
        receive = asyncio.ensure_future(self.ws.recv())  # websockets: cancelling recv loses nothing
        shutdown = asyncio.ensure_future(self._shutdown.wait())
        try:
            await asyncio.wait({receive, shutdown}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            shutdown.cancel()
            if not receive.done():
                receive.cancel()
        if receive.done() and not receive.cancelled():
            return receive.result()
        if self._shutdown.is_set():
            raise SessionFatal("shutting_down", "the server is shutting down")
        return None

    def _parse(self, text: str) -> StartMessage | StopMessage | None:
        """A control message, or None after telling the client what was wrong with it.

        Before `start`, a `start` that cannot be served ends the session; once started, no
        control message can end it but `stop` (a bad second `start` is only rejected).
        """
        try:
            return parse_control(text)
        except ProtocolError as error:
            if self.start is None and error.code in FATAL_START_ERRORS:
                raise SessionFatal(error.code, error.message) from None
            self._put_error(error.code, error.message)
            return None

    async def _open(self, start: StartMessage) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.decoder = await loop.run_in_executor(self.ctx.decode_executor, AudioDecoder, start.audio)
        except DecodeError as error:
            raise SessionFatal(error.code, error.message) from None
        self.policy = CaptionPolicy(CaptionPolicyConfig(interim_results=start.interim_results))
        try:
            self.slot = await self.ctx.scheduler.open(
                start.options, self._on_update, self._on_engine_failure, self.ctx.limits.max_backlog_s
            )
        except EngineError as error:  # options this engine cannot serve (e.g. a language)
            raise SessionFatal("bad_start", str(error)) from None

    # -- streaming -------------------------------------------------------------------------------

    async def _stream(self) -> str:
        receiver = asyncio.create_task(self._receive_loop(), name=f"{self.ctx.session_id}-recv")
        media = asyncio.create_task(self._media_loop(), name=f"{self.ctx.session_id}-media")
        shutdown = asyncio.create_task(self._shutdown.wait())
        try:
            done, _ = await asyncio.wait(
                {receiver, media, shutdown, self._fatal}, return_when=asyncio.FIRST_COMPLETED
            )
            if self._fatal.done():
                raise self._fatal.result()
            if media in done:
                media.result()  # re-raise its fatal error
                reason = "error"
            elif shutdown in done:
                receiver.cancel()
                self._put_error("shutting_down", "the server is shutting down; flushing captions", fatal=True)
                reason = "shutdown"
            else:
                reason = receiver.result()
            # The media task may die on a frame still queued: never wait on a queue nobody drains.
            end_of_media = asyncio.ensure_future(self._media.put(END_OF_MEDIA))
            await asyncio.wait({end_of_media, media, self._fatal}, return_when=asyncio.FIRST_COMPLETED)
            end_of_media.cancel()
            await self._until_fatal(media)
            await self._until_fatal(self._finish())
            return reason
        finally:
            for task in (receiver, media, shutdown):
                task.cancel()
            await asyncio.gather(receiver, media, shutdown, return_exceptions=True)

    async def _until_fatal(self, awaitable):
        """Await something, but give up as soon as the session has a fatal error."""
        task = asyncio.ensure_future(awaitable)
        await asyncio.wait({task, self._fatal}, return_when=asyncio.FIRST_COMPLETED)
        if self._fatal.done():
            task.cancel()
            raise self._fatal.result()
        return task.result()

    async def _receive_loop(self) -> str:
        limits = self.ctx.limits
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that lands as recv completes, and this task would then never stop.
                async with asyncio.timeout(limits.idle_timeout_s):
                    message = await self.ws.recv()
            except TimeoutError:
                raise SessionFatal("idle_timeout", f"nothing received for {limits.idle_timeout_s:g} s") from None
            if isinstance(message, bytes):
                if len(message) > limits.max_frame_bytes:
                    self._put_error(
                        "frame_too_large",
                        f"binary frame of {len(message)} bytes exceeds the {limits.max_frame_bytes}-byte limit;"
                        " it was dropped — send smaller frames",
                    )
                    continue
                if message:
                    await self._media.put(message)
                continue
            control = self._parse(message)
            if isinstance(control, StopMessage):
                return "stop"
            if control is not None:
                self._put_error("already_started", "this session has already started; a second `start` was ignored")

    async def _media_loop(self) -> None:
        loop = asyncio.get_running_loop()
        limit_samples = int(self.ctx.limits.max_session_s * self.ctx.engine_spec.sample_rate)
        while True:
            data = await self._media.get()
            try:
                chunks = await loop.run_in_executor(self.ctx.decode_executor, self._decode_and_chunk, data)
            except DecodeError as error:
                raise SessionFatal(error.code, error.message) from None
            for chunk in chunks:
                if chunk.end_sample > limit_samples:
                    raise SessionFatal("session_limit", f"session exceeded {self.ctx.limits.max_session_s:g} s of media")
                self._received_samples = max(self._received_samples, chunk.end_sample)
                dropped = self.ctx.scheduler.submit(self.slot, chunk)
                if dropped:
                    self._put_error(
                        "audio_dropped",
                        f"the model fell behind; dropped {samples_to_seconds(dropped):.2f} s of audio",
                    )
            if data is END_OF_MEDIA:
                return

    def _decode_and_chunk(self, data: bytes | None) -> list[AudioChunk]:
        """Decoder thread: bytes (or the end of media) → 40 ms chunks. Called one at a time."""
        if data is END_OF_MEDIA:
            decoded = self.decoder.flush()
        else:
            decoded = self.decoder.decode(data)
        chunks = [chunk for audio in decoded for chunk in self.chunker.push(audio)]
        if data is END_OF_MEDIA:
            chunks.extend(self.chunker.flush())
        return chunks

    async def _finish(self) -> None:
        try:
            update = await self.ctx.scheduler.finish(self.slot)
        except Exception as error:  # noqa: BLE001 - reported to this session only
            raise SessionFatal("engine_error", f"the model failed to finish this session: {error}") from None
        for event in self.policy.finish(update):
            self._put(event)

    # -- events ----------------------------------------------------------------------------------

    def _on_update(self, update: CaptionUpdate) -> None:
        if self.policy is None or self._fatal.done():
            return
        for event in self.policy.update(update):
            self._put(event)

    def _on_engine_failure(self, error: Exception) -> None:
        self._set_fatal(SessionFatal("engine_error", f"the model failed on this session's audio: {error}"))

    def _set_fatal(self, fatal: SessionFatal) -> None:
        if not self._fatal.done():
            self._fatal.set_result(fatal)

    def _put(self, event: Event) -> None:
        try:
            self.outbox.put(event)
        except OutboxOverflow as overflow:
            self._set_fatal(SessionFatal("slow_consumer", f"client is not reading events: {overflow}"))

    def _put_error(self, code: str, message: str, fatal: bool = False) -> None:
        self._put(Error(code, message, fatal))

    def _stats(self) -> Stats:
        slot = self.slot
        received = samples_to_seconds(self._received_samples)
        processed = slot.processed_s if slot else 0.0
        return Stats(
            audio_received_s=received,
            audio_processed_s=processed,
            lag_s=max(0.0, received - processed),
            backlog_s=slot.backlog_s if slot else 0.0,
            dropped_audio_s=slot.dropped_s if slot else 0.0,
            partials_coalesced=self.outbox.coalesced,
        )

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.scheduler_config.stats_interval_s)
            self._put(self._stats())

    async def _send_loop(self) -> None:
        timeout = self.ctx.limits.send_timeout_s
        while True:
            event = await self.outbox.get()
            try:
                async with asyncio.timeout(timeout):
                    await self.ws.send(to_json(event))
            except TimeoutError:
                log.warning("session %s: client stopped reading; closing", self.ctx.session_id)
                self._client_gone = True
                self.ws.transport.abort()
                self._set_fatal(SessionFatal("slow_consumer", f"a send blocked for {timeout:g} s"))
                return
            except ConnectionClosed:
                self._client_gone = True
                self._set_fatal(SessionFatal("client_gone", "the client closed the connection"))
                return
            if isinstance(event, Ended):
                return
