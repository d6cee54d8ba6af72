"""The async client library of the native streaming protocol: stream a media file, get events back.

It is: a file reader that decodes any audio or video file PyAV opens to 16 kHz mono `pcm_s16le`
lazily, one second at a time on a worker thread (hour-long files never sit in memory and never
block the event loop), and `stream_file`, which opens a websocket to `/v1/stream`, sends `start`,
sends the audio in 100 ms frames paced like a live capture (or as fast as the server keeps up),
with the file's video (when asked for) as JPEG frames (`frame_reader.py`) interleaved by media
time, each after its `frame` message, receives events concurrently, sends `stop` at the end and
returns when `ended` arrives. Every
event goes to a callback with its client-side receive time. See docs/protocol.md.
If the connection drops mid-stream it resumes the session (docs/protocol.md "Resume"): it
reconnects with the `resume_token` of `ready`, learns from `resumed` how many audio bytes the
server has, re-sends the rest from the audio it keeps (the last RESUME_BUFFER_S), and gets the
finals it missed, so the transcript is the uninterrupted one.
With
`StreamOptions.transport == "webrtc"` the audio goes as a WebRTC track instead
(`clients/webrtc_sender.py`); the events still come here (such a session does not resume).

It is not: a renderer (`clients/terminal.py`), a subtitle writer (`clients/subtitles.py`) or a
command line (`clients/cli.py`); it prints nothing. It does not resample by hand (PyAV does), and
it sends raw PCM rather than the container so that any file works against any server.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from patchstream.clients.frame_reader import JpegFrameReader
from patchstream.streaming.protocol import (
    AudioFormat,
    FrameMessage,
    ParsedEvent,
    StartMessage,
    StopMessage,
    VideoFormat,
    control_to_json,
    parse_event,
    samples_to_seconds,
    seconds_to_samples,
)

WIRE_SAMPLE_RATE = 16_000  # Hz of the PCM we send; the server's engine rate, so it never resamples
BYTES_PER_SAMPLE = 2  # pcm_s16le, mono
FRAME_S = 0.1  # one binary websocket frame: 100 ms of audio
FRAME_SAMPLES = seconds_to_samples(FRAME_S, WIRE_SAMPLE_RATE)  # 1600
FRAME_BYTES = FRAME_SAMPLES * BYTES_PER_SAMPLE  # 3200, far below the server's 1 MiB frame limit
READ_BATCH_FRAMES = 10  # frames decoded per worker-thread call: 1 s of audio
GAP_TOLERANCE_S = 0.1  # a hole in the file's timestamps longer than this is filled with silence
STATS_SILENCE_S = 10.0  # fast mode waits this long for a `stats` event before ignoring stats
MAX_EVENT_BYTES = 4 << 20  # largest server event we accept (long partials carry word lists)
RESUME_BUFFER_S = 60.0  # audio kept after sending, to re-send what a dropped connection lost
RESUME_WINDOW_S = 20.0  # how long to keep trying to resume (the server's grace is 30 s by default)
RESUME_RETRY_S = 0.5  # pause between reconnection attempts

EventCallback = Callable[["ReceivedEvent"], None]


class ClientError(Exception):
    """Streaming failed; the message says why in words a user can act on."""


class AudioFileError(ClientError):
    """The input file cannot be opened or decoded, or holds no audio."""


class ConnectError(ClientError):
    """The server cannot be reached or refused the websocket."""


class ConnectionLost(ClientError):
    """The connection closed before the server sent `ended`."""


class ServerError(ClientError):
    """The server ended the session with a fatal `error` event."""

    def __init__(self, code: str, message: str):
        super().__init__(f"server error {code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class StreamOptions:
    """How to stream one file."""

    url: str  # ws://host:port/v1/stream
    fast: bool = False  # False: real-time pace; True: as fast as the server keeps up
    language: str = "en"  # `start.language`
    prompt: str = ""  # `start.prompt`: words that bias recognition; empty sends none
    interim_results: bool = True  # ask for `caption.partial` events
    stats: bool = True  # ask for periodic `stats` (fast mode also paces itself by them)
    # Fast mode sends at most this much audio ahead of what the server reports processed, so a
    # fast client never overflows the server's audio backlog (30 s by default), where audio
    # would be dropped. Without `stats` there is no report, and fast mode relies on TCP alone.
    fast_max_ahead_s: float = 15.0
    open_timeout_s: float = 10.0  # connect + websocket handshake
    video_fps: float = 1.0  # JPEG frames per media second sent when the stream has video
    interpretations: tuple[str, ...] | None = None  # `start.interpretations`; None = all the engine offers
    api_key: str | None = None  # sent as `Authorization: Bearer` (an API key or a signed token)
    resume: bool = True  # resume the session when the connection drops mid-stream
    transport: str = "websocket"  # how media travels: "websocket" (binary frames) or "webrtc" (a peer connection)
    assist: dict | bool | None = None  # `start.assist` (agent assist); None sends none


@dataclass(frozen=True)
class ReceivedEvent:
    """A server event with the client's clock readings at the moment it arrived."""

    event: ParsedEvent  # type + fields as the server sent them
    # Monotonic seconds since media time 0 on the client's clock: the arrival of the session's
    # first event (`ready`). Audio is sent as a live capture started then would deliver it, so
    # `client_time_s - word_end` is a caption's latency as a live listener sees it.
    client_time_s: float
    client_wall_time: float  # Unix time (time.time()) of arrival, for logs from other machines

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def fields(self) -> dict:
        return self.event.fields

    def to_json_dict(self) -> dict:
        """The event's own fields plus `client_time_s` and `client_wall_time` (ms / µs rounded)."""
        # `+ 0.0` turns a rounded -0.0 into 0.0.
        return {
            **self.event.fields,
            "client_time_s": round(self.client_time_s, 3) + 0.0,
            "client_wall_time": round(self.client_wall_time, 6),
        }


@dataclass(frozen=True)
class StreamResult:
    """How a session that reached `ended` went."""

    ended: dict  # the `ended` event's fields (reason, audio_received_s, captions)
    finals: tuple[dict, ...]  # every `caption.final` event's fields, in order
    interpretations: tuple[dict, ...]  # every `interpretation.final` event's fields, in order
    warnings: tuple[dict, ...]  # non-fatal `error` events' fields
    audio_sent_s: float  # media seconds of audio sent


@dataclass(frozen=True)
class MediaInfo:
    """What the file reader found."""

    path: str
    codec: str  # the audio stream's codec name
    sample_rate: int  # of the source stream, Hz
    channels: int  # of the source stream; we send their mix
    duration_s: float | None  # from the container, when it says


class PcmFileReader:
    """Decode a media file's first audio stream to 16 kHz mono s16le frames, lazily.

    Blocking (PyAV): call it from a worker thread. `read` returns the next 100 ms frames; the
    last one may be shorter. Media time is the count of samples returned; holes in the file's
    timestamps are filled with silence so that caption times stay on the file's timeline.
    `close` may come from another thread while a read runs (a cancelled stream with a read-ahead
    in flight): it waits for that read, because freeing the decoder under it crashes.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            self._container = av.open(self.path)
        except (av.error.FFmpegError, OSError) as error:
            raise AudioFileError(f"cannot open {self.path}: {_reason(error)}") from None
        if not self._container.streams.audio:
            self._container.close()
            raise AudioFileError(f"{self.path} has no audio stream PyAV can read")
        stream = self._container.streams.audio[0]
        duration = self._container.duration  # microseconds (AV_TIME_BASE), or None
        self.info = MediaInfo(
            path=self.path,
            codec=stream.codec_context.name,
            sample_rate=stream.codec_context.sample_rate,
            channels=stream.codec_context.channels,
            duration_s=duration / 1_000_000 if duration else None,
        )
        self._pieces = self._decode(stream)
        # Bytes decoded but not yet returned: under one read's worth plus one decoded piece
        # (a codec frame, or at most a second of gap silence).
        self._pending = bytearray()
        self._lock = threading.Lock()  # serialises read and close across threads
        self._closed = False

    def read(self, max_frames: int = READ_BATCH_FRAMES) -> list[bytes]:
        """Up to `max_frames` frames of FRAME_BYTES; fewer only at the end; [] once exhausted."""
        want = max_frames * FRAME_BYTES
        with self._lock:
            if self._closed:
                return []
            while len(self._pending) < want and (piece := next(self._pieces, None)) is not None:
                self._pending += piece
            take = min(want, len(self._pending))  # == want unless the file has ended
            data = bytes(self._pending[:take])
            del self._pending[:take]
        return [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]

    def _decode(self, stream: av.AudioStream) -> Iterator[bytes]:
        """PCM pieces in media order: resampled audio, and silence where the file has holes."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=WIRE_SAMPLE_RATE)
        expected_s: float | None = None  # where the next frame starts if the audio is continuous
        try:
            for frame in self._container.decode(stream):
                start_s = frame.time if frame.time is not None else (expected_s or 0.0)
                if expected_s is not None and start_s - expected_s > GAP_TOLERANCE_S:
                    # The resampler may still hold a few ms of the audio before the hole;
                    # that slip is far below caption precision.
                    yield from _silence(start_s - expected_s)
                expected_s = start_s + frame.samples / frame.sample_rate
                yield from _pcm(resampler.resample(frame))
        except av.error.FFmpegError as error:
            raise AudioFileError(f"cannot decode {self.path}: {_reason(error)}") from None
        yield from _pcm(resampler.resample(None))  # the resampler's buffered tail

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._container.close()

    def __enter__(self) -> PcmFileReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pcm(frames: list[av.AudioFrame]) -> Iterator[bytes]:
    for frame in frames:
        yield frame.to_ndarray().astype("<i2", copy=False).tobytes()


def _silence(seconds: float) -> Iterator[bytes]:
    """`seconds` of s16 zeros in pieces of at most a second, so a long hole stays lazy too."""
    remaining = seconds_to_samples(seconds, WIRE_SAMPLE_RATE)
    while remaining > 0:
        samples = min(remaining, WIRE_SAMPLE_RATE)
        yield bytes(samples * BYTES_PER_SAMPLE)
        remaining -= samples


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = WIRE_SAMPLE_RATE) -> None:
    """Write float32 mono samples in [-1, 1] as a 16-bit WAV file (PyAV)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16).reshape(1, -1)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def start_message(options: StreamOptions, video: bool = False) -> str:
    """The `start` message for the PCM (and the JPEG frames, with `video`) this client sends."""
    return control_to_json(
        StartMessage(
            audio=AudioFormat("pcm_s16le", sample_rate=WIRE_SAMPLE_RATE, channels=1),
            language=options.language,
            prompt=options.prompt,
            interim_results=options.interim_results,
            stats=options.stats,
            video=VideoFormat("jpeg", options.video_fps) if video else None,
            interpretations=options.interpretations if video else None,
            assist=options.assist,
        )
    )


async def open_file(path: str | Path) -> PcmFileReader:
    """Open (probe) a media file on a worker thread; AudioFileError when it is unusable."""
    return await asyncio.get_running_loop().run_in_executor(None, PcmFileReader, path)


async def stream_file(
    path: str | Path, options: StreamOptions, on_event: EventCallback
) -> StreamResult:
    """Caption one file through a server: returns after `ended`.

    Raises AudioFileError, ConnectError, ServerError (a fatal `error` event; the events before
    it were still handed to `on_event`) or ConnectionLost.
    """
    reader = await open_file(path)
    try:
        return await stream_reader(reader, options, on_event)
    finally:
        reader.close()


async def stream_reader(
    reader: PcmFileReader, options: StreamOptions, on_event: EventCallback, frames: JpegFrameReader | None = None
) -> StreamResult:
    """`stream_file` for an already opened reader (the caller closes it); with `frames`, the
    video too (the caller closes that reader as well)."""
    websocket = await _connect(options.url, options)
    session_class = _Session
    if options.transport == "webrtc":
        from patchstream.clients.webrtc_sender import WebRTCSession  # noqa: PLC0415 - aiortc only when asked for

        session_class = WebRTCSession
    session = session_class(websocket, reader, options, on_event, frames)
    try:
        return await session.run()
    finally:
        await session.ws.close()


async def _connect(url: str, options: StreamOptions) -> ClientConnection:
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else None
    try:
        # No permessage-deflate: PCM barely compresses and the CPU is better left to the model.
        return await connect(
            url,
            compression=None,
            open_timeout=options.open_timeout_s,
            max_size=MAX_EVENT_BYTES,
            additional_headers=headers,
        )
    except (OSError, TimeoutError, InvalidURI, InvalidHandshake) as error:
        raise ConnectError(f"cannot connect to {url}: {_connect_reason(error)}") from None


def _connect_reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is `patchstream serve` running there?)"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        if status in (401, 403):
            return f"HTTP {status}: {bytes(error.response.body).decode(errors='replace').strip()}"
        return f"HTTP {status} (is this the /v1/stream endpoint?)"
    return _reason(error)


class _Session:
    """One websocket session: a send task and a receive task until `ended`.

    The receive task learns what the send task waits for (`ready`, the media-time origin, the
    server's progress); both run on the one event loop, so plain attributes and two
    asyncio.Events are the whole of their shared state.
    """

    def __init__(
        self,
        websocket: ClientConnection,
        reader: PcmFileReader,
        options: StreamOptions,
        on_event: EventCallback,
        frames: JpegFrameReader | None = None,
    ):
        self.ws = websocket  # the current connection (replaced on resume)
        self._reader = reader
        self._frames = frames  # the video's JPEG frames; None: audio only
        self._options = options
        self._on_event = on_event
        self._origin: float | None = None  # monotonic time of the first event: media time 0 here
        self._ready = asyncio.Event()  # `ready` arrived: audio may flow
        self._processed_s = 0.0  # `stats.audio_processed_s`: how far the engine has got
        self._stats_seen = asyncio.Event()  # set by each `stats` event (fast-mode pacing)
        self._stats_silent = False  # no stats within STATS_SILENCE_S: stop pacing by them
        self._sent_samples = 0
        self._finals: list[dict] = []
        self._interpretations: list[dict] = []
        self._warnings: list[dict] = []
        self._fatal: dict | None = None
        # Resume state: what the server needs to know us by, and the audio it may lack.
        self._session_id: str | None = None
        self._resume_token: str | None = None
        self._finals_received = 0  # caption and interpretation finals, the count a resume sends
        self._bytes_sent = 0  # audio bytes handed to the websocket so far
        self._sent: collections.deque[tuple[int, bytes]] = collections.deque()  # (offset, frame), last RESUME_BUFFER_S
        self._unsent: collections.deque[bytes] = collections.deque()  # frames read from the file, not yet sent
        self._read_ahead: asyncio.Future | None = None  # the next batch being decoded (survives a drop)
        self._resumed = asyncio.Event()  # `resumed` arrived on the current connection
        self._resume_offset: int | None = None  # the server's audio byte count from `resumed`
        self._stop_sent = False
        self._resuming = False  # the current connection is a resume: re-send before going on

    async def run(self) -> StreamResult:
        await self.ws.send(self._start_message())
        while True:
            try:
                return await self._run_connection()
            except _Dropped as dropped:
                await self._reconnect(dropped)

    async def _reconnect(self, dropped: _Dropped) -> None:
        """Resume the session on a new connection, or raise ConnectionLost."""
        deadline = time.monotonic() + RESUME_WINDOW_S
        query = urlencode({"resume": self._session_id, "resume_token": self._resume_token,
                           "finals_received": self._finals_received})
        url = self._options.url + ("&" if "?" in self._options.url else "?") + query
        while True:
            try:
                self.ws = await _connect(url, self._options)
                self._resumed.clear()
                self._resuming = True
                return
            except ConnectError as error:
                if time.monotonic() > deadline:
                    raise ConnectionLost(f"{dropped}; resuming failed: {error}") from None
                await asyncio.sleep(RESUME_RETRY_S)

    @property
    def _ws(self) -> ClientConnection:
        """The current connection (the name subclasses use)."""
        return self.ws

    def _can_resume(self) -> bool:
        # A WebRTC session's audio travels on a peer connection the resume cannot carry over.
        return self._options.resume and self._options.transport == "websocket" and self._resume_token is not None and self._fatal is None and not self._stop_sent

    async def _run_connection(self) -> StreamResult:
        receiver = asyncio.create_task(self._receive())
        sender = asyncio.create_task(self._send_audio())
        try:
            while not receiver.done():
                waiting = {receiver} if sender.done() else {receiver, sender}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if sender.done() and not sender.cancelled() and not receiver.done():
                    error = sender.exception()
                    # A send failing because the server closed is explained by what the
                    # receiver reads next (a fatal error, `ended`); anything else is ours.
                    if error is not None and not isinstance(error, ConnectionClosed):
                        raise error
            return receiver.result()
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)

    def _start_message(self) -> str:
        return start_message(self._options, video=self._frames is not None)

    async def _receive(self) -> StreamResult:
        try:
            async for message in self.ws:
                now, wall = time.monotonic(), time.time()
                if self._origin is None:
                    self._origin = now
                if isinstance(message, bytes):
                    continue  # the protocol has no server → client binary frames; ignore
                event = _parse(message)
                self._track(event)
                self._on_event(ReceivedEvent(event, now - self._origin, wall))
                if event.type == "ended":
                    return self._result(event)
        except ConnectionClosedError as error:
            if self._can_resume():
                raise _Dropped(f"the connection dropped ({error})") from None
            raise self._fatal_error() or ConnectionLost(
                f"the server closed the connection before `ended` ({error})"
            ) from None
        if self._can_resume():
            raise _Dropped("the connection closed before `ended`")
        raise self._fatal_error() or ConnectionLost("the server closed the connection before `ended`")

    def _track(self, event: ParsedEvent) -> None:
        fields = event.fields
        if event.type == "ready":
            self._session_id = fields.get("session_id")
            self._resume_token = fields.get("resume_token")
            self._ready.set()
        elif event.type == "resumed":
            self._resume_offset = int(fields.get("audio_bytes_received", 0))
            self._resumed.set()
        elif event.type == "caption.final":
            self._finals.append(fields)
            self._finals_received += 1
        elif event.type == "interpretation.final":
            self._interpretations.append(fields)
            self._finals_received += 1
        elif event.type == "stats":
            self._processed_s = float(fields.get("audio_processed_s", 0.0))
            self._stats_seen.set()
        elif event.type == "error":
            if fields.get("fatal"):
                self._fatal = fields
            else:
                self._warnings.append(fields)

    def _fatal_error(self) -> ServerError | None:
        if self._fatal is None:
            return None
        return ServerError(str(self._fatal.get("code")), str(self._fatal.get("message")))

    def _result(self, ended: ParsedEvent) -> StreamResult:
        error = self._fatal_error()
        if error is not None:
            raise error
        return StreamResult(
            ended=ended.fields,
            finals=tuple(self._finals),
            interpretations=tuple(self._interpretations),
            warnings=tuple(self._warnings),
            audio_sent_s=samples_to_seconds(self._sent_samples, WIRE_SAMPLE_RATE),
        )

    async def _send_audio(self) -> None:
        await self._ready.wait()
        if self._resuming:
            await self._resend_after_resume()
            self._resuming = False
        loop = asyncio.get_running_loop()
        # Decode the next second while this one is being sent: one batch of read-ahead.
        # A read-ahead still running when this task is cancelled is why the reader's `close`
        # waits for reads (briefly: one batch is about a second of audio). The read-ahead and
        # the frames read but not sent outlive a dropped connection: no audio is lost.
        while True:
            if not self._unsent:
                if self._read_ahead is None:
                    self._read_ahead = loop.run_in_executor(None, self._reader.read, READ_BATCH_FRAMES)
                frames = await asyncio.shield(self._read_ahead)
                self._read_ahead = None
                if not frames:
                    break
                self._unsent.extend(frames)
                self._read_ahead = loop.run_in_executor(None, self._reader.read, READ_BATCH_FRAMES)
            frame = self._unsent[0]
            await self._pace(len(frame) // BYTES_PER_SAMPLE)
            await self._send_video(samples_to_seconds(self._sent_samples + len(frame) // BYTES_PER_SAMPLE, WIRE_SAMPLE_RATE))
            self._unsent.popleft()
            self._keep(frame)  # before sending: if the send breaks, the resume decides what arrived
            self._sent_samples += len(frame) // BYTES_PER_SAMPLE
            await self.ws.send(frame)
        await self._send_video(float("inf"))
        self._stop_sent = True
        await self.ws.send(control_to_json(StopMessage()))

    def _keep(self, frame: bytes) -> None:
        """Remember a frame for re-sending, dropping what is older than RESUME_BUFFER_S."""
        self._sent.append((self._bytes_sent, frame))
        self._bytes_sent += len(frame)
        keep_bytes = seconds_to_samples(RESUME_BUFFER_S, WIRE_SAMPLE_RATE) * BYTES_PER_SAMPLE
        while self._sent and self._sent[0][0] + len(self._sent[0][1]) < self._bytes_sent - keep_bytes:
            self._sent.popleft()

    async def _resend_after_resume(self) -> None:
        """After `resumed`: send the kept audio from the server's byte offset on (it may cut a frame)."""
        await self._resumed.wait()
        offset = self._resume_offset
        if offset is None or offset > self._bytes_sent or (self._sent and offset < self._sent[0][0]):
            raise ClientError(f"cannot resume: the server has {offset} audio bytes, this client kept "
                              f"{self._sent[0][0] if self._sent else self._bytes_sent}..{self._bytes_sent}")
        for start, frame in list(self._sent):
            if start + len(frame) > offset:
                await self.ws.send(frame[max(0, offset - start):])

    async def _send_video(self, until_s: float) -> None:
        """The video frames shown before media time `until_s`: a `frame` message, then the JPEG."""
        if self._frames is None:
            return
        for frame in await asyncio.get_running_loop().run_in_executor(None, self._frames.read, until_s):
            await self.ws.send(control_to_json(FrameMessage(frame.time_s)))
            await self.ws.send(frame.data)

    async def _pace(self, frame_samples: int) -> None:
        """Wait until this frame may go: when a live capture would have it, or fast-mode room."""
        frame_end_s = samples_to_seconds(self._sent_samples + frame_samples, WIRE_SAMPLE_RATE)
        if not self._options.fast:
            # Deadlines are absolute media times, so a slow decode or a late wake-up never
            # accumulates drift: the next frames simply go out sooner.
            delay = self._origin + frame_end_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            return
        while (
            self._options.stats
            and not self._stats_silent
            and frame_end_s - self._processed_s > self._options.fast_max_ahead_s
        ):
            self._stats_seen.clear()
            try:
                await asyncio.wait_for(self._stats_seen.wait(), STATS_SILENCE_S)
            except TimeoutError:
                # A server that sends no stats cannot pace us; fall back to TCP backpressure.
                self._stats_silent = True


class _Dropped(Exception):
    """The connection dropped mid-stream and the session may be resumed."""


def _parse(message: str) -> ParsedEvent:
    try:
        return parse_event(message)
    except ValueError as error:  # json.JSONDecodeError is a ValueError too
        raise ClientError(f"the server sent something that is not a protocol event: {error}") from None
