"""Audio decoding: a session's incoming bytes -> float32 16 kHz audio, one array per channel.

This module is the only place where a session's audio bytes meet PyAV. An `AudioDecoder` takes
the bytes a client declared with an `AudioFormat` (raw PCM, G.711 mu-law/A-law, or any container
PyAV demuxes: WebM/Opus from a browser's MediaRecorder, Ogg/Opus, WAV, MP3, ...) in pieces of any
size and returns `DecodedAudio`: planar float32 at 16 kHz, channels kept apart (call centres send
agent/customer stereo), stamped with the media time of its first sample. All decoding and
resampling is PyAV's (`av.AudioResampler`); there is no hand-written resampler here.

A container session that declared `"video": {"encoding": "container"}` also gets the container's
first video track: the demux thread decodes it, keeps the frames due at the engine's rate
(`frames.FrameSampler`; a frame not due is not even decoded when the codec can skip it, i.e. it is
no reference frame: FFmpeg's `skip_frame = NONREF`), patchifies them (`video_decode.patchify`) on
the audio's clock and holds them for `take_video` — at most `MAX_WAITING_FRAMES`, the oldest
dropped first (counted), since a frame is worth less than the audio beside it. Video never ends a
session: a video track larger than `VideoOptions.max_pixels`, or one that fails to decode, is
switched off with one non-fatal error (`frames.ContainerVideo.error`) and the audio goes on.

It is not async and holds no sockets: the session calls `decode`/`flush` off the event loop (in an
executor), one call at a time. It does not cut audio into model frames (`chunker.py` does) and
does not downmix (the chunker builds the mono mix from the channels kept here).

Container input is demuxed by a per-session thread that reads a bounded, blocking file-like
object: FFmpeg's demuxers want to pull bytes, a live stream pushes them. `decode` writes, then
waits (bounded by `decode_wait_s`) until the thread has consumed everything it can, and returns
what came out; `AudioDecoder.waits_for_demuxer` tells the caller so, which runs such a decoder on
a thread of the session's own rather than one other sessions share. `close` always releases the
thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from patchstream.model.api import SAMPLE_RATE, seconds_to_samples
from patchstream.model.api import VideoFrame
from patchstream.streaming.chunker import DecodedAudio
from patchstream.streaming.frames import ContainerVideo, FrameSampler
from patchstream.streaming.protocol import ALLOWED_DEMUXERS, MAX_CHANNELS, RAW_ENCODINGS, AudioFormat, CodedError, ErrorCode
from patchstream.streaming.video_decode import patchify

MAX_WAITING_FRAMES = 2  # container video frames decoded but not yet collected; the oldest goes first
SKIP_NOT_DUE = "NONREF"  # FFmpeg skip_frame for a packet not due: skips it unless later frames need it
DECODE_ALL = "DEFAULT"  # skip_frame for a packet that is due

# Raw encodings of the protocol -> (PyAV decoder name, bytes per sample per channel).
_RAW_CODECS: dict[str, tuple[str, int]] = {
    "pcm_s16le": ("pcm_s16le", 2),
    "pcm_f32le": ("pcm_f32le", 4),
    "mulaw": ("pcm_mulaw", 1),
    "alaw": ("pcm_alaw", 1),
}
assert set(_RAW_CODECS) == set(RAW_ENCODINGS), "every raw encoding of the protocol has a codec"

# FFmpeg's default layout for each channel count; the resampler keeps the layout, so channels
# pass through unmixed and in order.
_LAYOUT_BY_CHANNELS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
# Packed float32, reshaped to (C, n) here: PyAV 18.1's `to_ndarray()` crashes (SIGSEGV) on an
# 8-plane planar frame, so the planar format would let one client's 7.1 stream kill the server.
_OUTPUT_SAMPLE_FORMAT = "flt"
# Probing may only pick a demuxer of the protocol's allow-list (FFmpeg matches any of a
# demuxer's names, so "mov" admits mp4/m4a/3gp), and nothing may open files or URLs.
_DEMUXER_WHITELIST = ",".join(ALLOWED_DEMUXERS)

# --- error codes (sent to clients in error events) ----------------------------------------------

UNSUPPORTED_ENCODING = ErrorCode.UNSUPPORTED_ENCODING  # encoding is not one of the protocol's
BAD_FORMAT = ErrorCode.BAD_FORMAT  # the container hint names a demuxer this FFmpeg lacks
DECODE_FAILED = ErrorCode.DECODE_FAILED  # the bytes are not what was declared, or PyAV gave up on them
INPUT_TOO_LARGE = ErrorCode.INPUT_TOO_LARGE  # more undecoded bytes than DecoderConfig.max_pending_bytes
DECODER_CLOSED = "decoder_closed"  # decode after flush/close: a server bug, never the client's input


class DecodeError(CodedError):
    """Audio could not be decoded. `code` is machine-readable, `message` for humans."""


def _is_demuxer(name: str) -> bool:
    try:
        return av.ContainerFormat(name, "r").is_input
    except ValueError:  # FFmpeg has no demuxer of that name
        return False


@dataclass(frozen=True)
class DecoderConfig:
    """Bounds and timeouts of one session's decoder."""

    max_pending_bytes: int = 4 << 20  # undecoded bytes held at once; more -> INPUT_TOO_LARGE
    max_header_bytes: int = 1 << 20  # a container must open within this many bytes, else DECODE_FAILED
    max_backlog_samples: int = seconds_to_samples(60.0)  # decoded, uncollected audio before the demuxer pauses
    decode_wait_s: float = 1.0  # longest a decode() call waits for the demux thread to catch up
    flush_timeout_s: float = 10.0  # longest flush() waits for the demuxer to finish the stream
    close_join_s: float = 2.0  # longest close() waits for the demux thread to exit
    resync_tolerance_s: float = 0.002  # container timestamps this close to the clock are rounding

    def __post_init__(self) -> None:
        if min(self.max_pending_bytes, self.max_header_bytes, self.max_backlog_samples) <= 0 or min(
            self.decode_wait_s, self.flush_timeout_s, self.close_join_s, self.resync_tolerance_s
        ) < 0:
            raise ValueError(f"invalid decoder config: {self}")


@dataclass(frozen=True)
class VideoOptions:
    """What to do with a container's video track (None in `AudioDecoder`: ignore it)."""

    fps: float  # frames per media second to keep (the engine's rate)
    soft_tokens: int  # per-frame budget the kept frames are resized to
    max_pixels: int  # a larger video track is not decoded at all


# Demuxer options for live input. Without them FFmpeg reads up to 5 MB / 5 s before it returns
# from open, which on a live stream means "until the stream ends".
_PROBE_BYTES_WITH_HINT = 32  # FFmpeg's minimum: a named demuxer gets stream parameters from headers
_PROBE_BYTES_NO_HINT = 8_192  # enough to recognise WebM, Ogg, WAV, MP3 by their first bytes
_ANALYZE_DURATION_US = 1  # don't read ahead to estimate durations (0 would mean FFmpeg's 5 s default)
_IO_BUFFER_BYTES = 4_096  # AVIO read size; small so a live stream is not held back by buffering


# --- the media clock ----------------------------------------------------------------------------


def _to_16k(pts: int, time_base: Fraction) -> int:
    """A container timestamp as a 16 kHz media time (exact seconds, then the one conversion)."""
    return seconds_to_samples(pts * time_base)


class _ClockedResampler:
    """`av.AudioResampler` to 16 kHz planar float plus the media time of what comes out.

    The resampler is a continuous filter, so its output position is the anchor (media time of
    the first input sample) plus the samples it has produced. When an input frame's timestamp
    strays from where the clock expects it by more than the tolerance (a gap, an overlap, a
    timestamp reset) or its format changes, the resampler is flushed and restarted at the new
    time; the chunker then fills or trims. Smaller strays are container rounding (WebM stores
    milliseconds) and are ignored, so they never accumulate: each frame is compared with the
    anchor, not with the previous frame.
    """

    def __init__(self, channels: int, tolerance_samples: int) -> None:
        self._channels = channels
        self._layout = _LAYOUT_BY_CHANNELS[channels]  # fixed for the session: C never changes
        self._tolerance = tolerance_samples
        self._resampler: av.AudioResampler | None = None
        self._input_key: tuple | None = None  # (sample format, layout, rate) the resampler expects
        self._anchor = 0  # media time of the current resampler's first input sample, 16 kHz
        self._in_samples = 0  # input samples fed to the current resampler, at the input rate
        self._in_rate = SAMPLE_RATE
        self._out_samples = 0  # output samples produced by the current resampler

    def _expected(self) -> int:
        return self._anchor + seconds_to_samples(Fraction(self._in_samples, self._in_rate))

    def push(self, frame: av.AudioFrame, start_sample: int | None) -> list[DecodedAudio]:
        out: list[DecodedAudio] = []
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None:
            self._start(key, frame.sample_rate, start_sample if start_sample is not None else 0)
        elif key != self._input_key or (
            start_sample is not None and abs(start_sample - self._expected()) > self._tolerance
        ):
            next_time = start_sample if start_sample is not None else self._expected()
            out += self.flush()
            self._start(key, frame.sample_rate, next_time)
        self._in_samples += frame.samples
        frame.pts = None  # time is tracked here; keep the filter graph from acting on timestamps
        out += self._collect(self._resampler.resample(frame))
        return out

    def flush(self) -> list[DecodedAudio]:
        """Drain the resampler's delay line; the next push starts a fresh one."""
        if self._resampler is None:
            return []
        out = self._collect(self._resampler.resample(None))
        self._resampler = None
        return out

    def _start(self, key: tuple, rate: int, anchor: int) -> None:
        self._resampler = av.AudioResampler(
            format=_OUTPUT_SAMPLE_FORMAT, layout=self._layout, rate=SAMPLE_RATE
        )
        self._input_key = key
        self._anchor, self._in_samples, self._in_rate, self._out_samples = anchor, 0, rate, 0

    def _collect(self, frames: list[av.AudioFrame]) -> list[DecodedAudio]:
        out = []
        for frame in frames:
            packed = frame.to_ndarray().reshape(-1, self._channels)  # (n, C), interleaved
            samples = np.ascontiguousarray(packed.T, dtype=np.float32)  # (C, n)
            if not np.isfinite(samples).all():
                # pcm_f32le clients can send NaN/inf; one of them would poison every model frame after.
                samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
            out.append(DecodedAudio(samples, self._anchor + self._out_samples))
            self._out_samples += samples.shape[1]
        return out


def _tolerance_samples(config: DecoderConfig) -> int:
    return seconds_to_samples(config.resync_tolerance_s)


def _coalesce(pieces: list[DecodedAudio]) -> list[DecodedAudio]:
    """Join pieces that follow each other in time, so one call returns few, large arrays."""
    out: list[DecodedAudio] = []
    run: list[DecodedAudio] = []
    for piece in pieces:
        if piece.num_samples == 0:
            continue
        if run and piece.start_sample != run[-1].start_sample + run[-1].num_samples:
            out.append(_join(run))
            run = []
        run.append(piece)
    if run:
        out.append(_join(run))
    return out


def _join(run: list[DecodedAudio]) -> DecodedAudio:
    if len(run) == 1:
        return run[0]
    return DecodedAudio(np.concatenate([p.samples for p in run], axis=1), run[0].start_sample)


# --- raw PCM / G.711 ----------------------------------------------------------------------------


class _RawSource:
    """Raw interleaved samples through PyAV's PCM/G.711 decoders, synchronously."""

    def __init__(self, fmt: AudioFormat, clock: _ClockedResampler) -> None:
        codec_name, sample_bytes = _RAW_CODECS[fmt.encoding]
        self._codec = av.CodecContext.create(codec_name, "r")
        self._codec.sample_rate = fmt.sample_rate
        self._codec.layout = _LAYOUT_BY_CHANNELS[fmt.channels]
        self._block_bytes = sample_bytes * fmt.channels  # one sample of every channel
        # Bytes of an incomplete sample frame held for the next call; < _block_bytes, so bounded.
        self._carry = b""
        self._clock = clock

    def decode(self, data: bytes) -> list[DecodedAudio]:
        buffer = self._carry + bytes(data) if self._carry else bytes(data)
        whole = len(buffer) - len(buffer) % self._block_bytes
        self._carry = buffer[whole:]
        if not whole:
            return []
        out: list[DecodedAudio] = []
        for frame in self._codec.decode(av.Packet(buffer[:whole])):
            out += self._clock.push(frame, None)  # raw audio is continuous by definition
        return out

    def flush(self) -> list[DecodedAudio]:
        self._carry = b""  # an incomplete sample frame at the end is not audio
        return self._clock.flush()

    def close(self) -> None:
        self._carry = b""


# --- containers ---------------------------------------------------------------------------------


class _ContainerSource:
    """A demux thread pulling from a bounded blocking buffer that `decode` pushes into.

    All shared state is guarded by one condition variable. The thread blocks in `read` when the
    buffer is empty; `decode` returns once the thread is in that state with nothing left to read
    (everything decodable so far has come out), when the thread has ended, or after
    `decode_wait_s`. Decoded audio waits in `_outputs` until a call collects it.
    """

    def __init__(self, fmt: AudioFormat, config: DecoderConfig, video: VideoOptions | None = None) -> None:
        self._fmt = fmt
        self._config = config
        self._video = video
        self._frames: list[VideoFrame] = []  # decoded video frames not yet collected (MAX_WAITING_FRAMES)
        self.frames_dropped = 0  # frames pushed out of `_frames` before collection
        self.frames_received = 0  # video packets the container carried (every frame, decoded or not)
        self.frames_decoded = 0  # video frames the codec actually produced (fewer: not-due frames skipped)
        self._video_error: CodedError | None = None  # why video was switched off, until reported
        self._cond = threading.Condition()
        # Undecoded bytes; bounded by config.max_pending_bytes: a write that would exceed it is
        # refused with INPUT_TOO_LARGE (a container stream cannot skip bytes, so nothing is dropped
        # silently and the session ends).
        self._pending = bytearray()
        # Decoded audio not yet collected; bounded by config.max_backlog_samples: past it the demux
        # thread pauses (backpressure) until a call collects. Decoded audio is never dropped.
        self._outputs: list[DecodedAudio] = []
        self._backlog_samples = 0
        self._bytes_written = 0  # accepted from the caller
        self._bytes_read = 0  # consumed by the demuxer
        self._eof = False  # no more input: read returns b"" once _pending is empty
        self._aborted = False  # close(): read returns b"" now, outputs are discarded
        self._reader_waiting = False  # the thread is blocked in read with nothing to read
        self._opened = False  # the demuxer has parsed the headers and found an audio stream
        self._finished = False  # the thread has exited
        self._error: DecodeError | None = None
        self._thread = threading.Thread(target=self._run, name="patchstream-demux", daemon=True)
        self._thread.start()

    # -- caller side (executor thread) --

    def decode(self, data: bytes) -> list[DecodedAudio]:
        with self._cond:
            self._raise_if_failed()
            if self._eof:
                raise DecodeError(DECODER_CLOSED, "decode called after flush")
            if len(self._pending) + len(data) > self._config.max_pending_bytes:
                self._fail(
                    DecodeError(
                        INPUT_TOO_LARGE,
                        f"{len(self._pending) + len(data)} undecoded bytes exceed the limit of "
                        f"{self._config.max_pending_bytes}; send smaller frames or send slower",
                    )
                )
                self._raise_if_failed()
            self._pending += data
            self._bytes_written += len(data)
            self._cond.notify_all()
            return self._wait(self._config.decode_wait_s, until_finished=False)

    def flush(self) -> list[DecodedAudio]:
        with self._cond:
            self._raise_if_failed()
            self._eof = True
            self._cond.notify_all()
            out = self._wait(self._config.flush_timeout_s, until_finished=True)
            if not self._finished:
                self._fail(DecodeError(DECODE_FAILED, "the demuxer did not finish the stream in time"))
                self._raise_if_failed()
        self._thread.join(self._config.close_join_s)
        return out

    def close(self) -> None:
        with self._cond:
            self._aborted = True
            self._outputs = []
            self._pending = bytearray()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(self._config.close_join_s)

    def _wait(self, timeout_s: float, until_finished: bool) -> list[DecodedAudio]:
        """Collect outputs until the demuxer is idle (or finished), an error, or the timeout."""
        collected: list[DecodedAudio] = []
        deadline = time.monotonic() + timeout_s
        while True:
            collected += self._take_outputs()
            self._raise_if_failed()
            idle = self._reader_waiting and not self._pending and not until_finished
            remaining = deadline - time.monotonic()
            if self._finished or idle or remaining <= 0:
                break
            self._cond.wait(remaining)
        return collected + self._take_outputs()

    def take_video(self) -> ContainerVideo:
        with self._cond:
            frames, self._frames = self._frames, []
            error, self._video_error = self._video_error, None
            return ContainerVideo(tuple(frames), self.frames_received, self.frames_dropped, error)

    def _emit_frame(self, frame: VideoFrame) -> None:
        with self._cond:
            self._frames.append(frame)
            if len(self._frames) > MAX_WAITING_FRAMES:
                del self._frames[0]
                self.frames_dropped += 1

    def _take_outputs(self) -> list[DecodedAudio]:
        out, self._outputs, self._backlog_samples = self._outputs, [], 0
        if out:
            self._cond.notify_all()  # a demuxer paused on backpressure may go on
        return out

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._aborted:
            raise DecodeError(DECODER_CLOSED, "decoder is closed")

    def _fail(self, error: DecodeError) -> None:
        """Record the first error and make the demux thread stop (read returns EOF)."""
        if self._error is None:
            self._error = error
        self._aborted = True
        self._pending = bytearray()
        self._cond.notify_all()

    def _describe(self) -> str:
        return repr(self._fmt.container) if self._fmt.container else "decodable"

    # -- demux thread side --

    def read(self, size: int = -1) -> bytes:
        """File-like read for PyAV: blocks until bytes, EOF (b"") or close (b"")."""
        with self._cond:
            while not self._pending and not self._eof and not self._aborted:
                self._reader_waiting = True
                self._cond.notify_all()  # tell decode() everything so far has been consumed
                self._cond.wait()
            self._reader_waiting = False
            if not self._opened and self._bytes_read > self._config.max_header_bytes:
                # Some demuxers (Ogg) scan garbage for a sync word for a long time; cut that short.
                self._fail(
                    DecodeError(
                        DECODE_FAILED,
                        f"no {self._describe()} audio stream found in the first "
                        f"{self._config.max_header_bytes} bytes",
                    )
                )
            if self._aborted or not self._pending:
                return b""
            size = len(self._pending) if size is None or size < 0 else min(size, len(self._pending))
            data = bytes(self._pending[:size])
            del self._pending[:size]
            self._bytes_read += size
            return data

    def _emit(self, pieces: list[DecodedAudio]) -> None:
        with self._cond:
            while self._backlog_samples >= self._config.max_backlog_samples and not self._aborted:
                self._cond.wait()
            if self._aborted:
                return
            self._outputs += pieces
            self._backlog_samples += sum(p.num_samples for p in pieces)
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            self._demux()
        except DecodeError as error:
            with self._cond:
                self._fail(error)
        except Exception as error:  # any PyAV/FFmpeg failure is the input's fault, not the server's
            with self._cond:
                empty_stream = self._eof and self._bytes_written == 0  # start then stop: no error
                if not self._aborted and not empty_stream:
                    self._fail(self._explain(error))
        finally:
            with self._cond:
                self._finished = True
                self._reader_waiting = False
                self._cond.notify_all()

    def _explain(self, error: Exception) -> DecodeError:
        error = getattr(error, "strerror", None) or error  # FFmpeg's words, without errno noise
        if not self._opened:
            return DecodeError(
                DECODE_FAILED, f"the bytes are not a {self._describe()} audio stream: {error}"
            )
        return DecodeError(DECODE_FAILED, f"{self._describe()} stream is corrupt: {error}")

    def _demux(self) -> None:
        hint = self._fmt.container
        options = {
            "probesize": str(_PROBE_BYTES_WITH_HINT if hint else _PROBE_BYTES_NO_HINT),
            "analyzeduration": str(_ANALYZE_DURATION_US),
            "format_whitelist": _DEMUXER_WHITELIST,  # probing never picks concat/hls/...
            "protocol_whitelist": "",  # and nothing inside the stream may open a file or URL
        }
        reader = _Reader(self)
        with av.open(reader, "r", format=hint, options=options, buffer_size=_IO_BUFFER_BYTES) as container:
            if not container.streams.audio:
                raise DecodeError(DECODE_FAILED, f"the {self._describe()} stream has no audio track")
            stream = container.streams.audio[0]
            video = self._video_stream(container)
            with self._cond:
                self._opened = True
            clock: _ClockedResampler | None = None
            origin: int | None = None  # the first timestamp: media time 0 of the session
            sampler = FrameSampler(self._video.fps) if video is not None else None
            video_on = video is not None  # switched off for good by a broken track
            for packet in container.demux(*[s for s in (stream, video) if s is not None]):
                if self._aborted:
                    return
                if packet.stream is video:
                    if video_on:
                        origin, video_on = self._video_packet(packet, origin, sampler)
                    continue
                for frame in packet.decode():  # the final empty packet flushes the decoder
                    if clock is None:
                        # The first frame fixes the session's channel count (beyond 8: a 7.1 downmix).
                        channels = min(frame.layout.nb_channels, MAX_CHANNELS)
                        clock = _ClockedResampler(channels, _tolerance_samples(self._config))
                    time_base = frame.time_base or stream.time_base
                    start = _to_16k(frame.pts, time_base) if frame.pts is not None and time_base else None
                    if start is not None:
                        # Streams may start at any timestamp (MPEG-TS: hours); captions count from 0.
                        origin = start if origin is None else origin
                        start = max(0, start - origin)
                    self._emit(clock.push(frame, start))
            if clock is not None:
                self._emit(clock.flush())


    def _video_stream(self, container: av.container.InputContainer) -> av.VideoStream | None:
        """The video track to decode, if the session asked for one and it is not too large."""
        if self._video is None or not container.streams.video:
            return None
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > self._video.max_pixels:
            # A bomb-sized track: never decoded; the audio is still captioned.
            self._video_off(self._too_large(width, height))
            return None
        return stream

    def _too_large(self, width: int, height: int) -> CodedError:
        return CodedError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"the container's {width}x{height} video track exceeds {self._video.max_pixels} pixels;"
            " it is not decoded (video is off for this session, audio goes on)",
        )

    def _video_off(self, error: CodedError) -> None:
        with self._cond:
            self._video_error = error

    def _video_packet(self, packet: av.Packet, origin: int | None, sampler: FrameSampler) -> tuple[int | None, bool]:
        """Decode one video packet; keep, patchify and hold the frames due. Returns the origin and
        whether video stays on: a packet that fails to decode switches it off (the error is reported)."""
        if packet.size:
            with self._cond:
                self.frames_received += 1
        codec = packet.stream.codec_context
        due = origin is None or packet.pts is None or sampler.due(max(0, _to_16k(packet.pts, packet.time_base) - origin))
        codec.skip_frame = DECODE_ALL if due else SKIP_NOT_DUE
        try:
            for frame in packet.decode():
                self.frames_decoded += 1
                time_base = frame.time_base or packet.stream.time_base
                if frame.pts is None or not time_base:
                    continue
                start = _to_16k(frame.pts, time_base)
                origin = start if origin is None else origin  # the first timestamp of either track is time 0
                start = max(0, start - origin)
                if frame.width * frame.height > self._video.max_pixels:
                    raise self._too_large(frame.width, frame.height)
                if not sampler.due(start):
                    continue
                video_frame = patchify(frame, start, self._video.soft_tokens)
                sampler.admit(start)  # only a frame that made it through takes the slot
                self._emit_frame(video_frame)
        except CodedError as error:
            self._video_off(error)
            return origin, False
        except Exception as error:  # noqa: BLE001 - a broken video track is the input's, and costs only the video
            reason = getattr(error, "strerror", None) or error
            self._video_off(
                CodedError(
                    ErrorCode.DECODE_FAILED,
                    f"the container's video track could not be decoded ({reason}); video is off for this"
                    " session, audio goes on",
                )
            )
            return origin, False
        return origin, True


class _Reader:
    """The minimal file-like object PyAV reads from: `read` only, so FFmpeg treats it as a live,
    unseekable stream and never tries to seek to the end for a duration."""

    def __init__(self, source: _ContainerSource) -> None:
        self.read = source.read


# --- the public decoder -------------------------------------------------------------------------


class AudioDecoder:
    """One session's decoder: bytes in, `DecodedAudio` out. Not thread-safe; one call at a time.

    `close` may be called from another thread while a call is in progress, and always releases
    the demux thread. After a `DecodeError` from decode/flush the decoder is dead: every further
    call raises the same error.
    """

    def __init__(
        self, fmt: AudioFormat, config: DecoderConfig = DecoderConfig(), video: VideoOptions | None = None
    ) -> None:
        if fmt.container is not None and not _is_demuxer(fmt.container):
            raise DecodeError(BAD_FORMAT, f"container {fmt.container!r} is not available in this server's FFmpeg")
        self.format = fmt
        self.config = config
        if fmt.is_raw:
            clock = _ClockedResampler(fmt.channels, _tolerance_samples(config))
            self._source: _RawSource | _ContainerSource = _RawSource(fmt, clock)
        else:
            self._source = _ContainerSource(fmt, config, video)
        self._closed = False
        self._flushed = False
        self._error: DecodeError | None = None

    @property
    def waits_for_demuxer(self) -> bool:
        """True for containers: `decode` may block up to `decode_wait_s` on the demux thread, so it
        must not run on a thread other sessions share (one slow stream would stall them all)."""
        return not self.format.is_raw

    def decode(self, data: bytes) -> list[DecodedAudio]:
        """Decode the next bytes of the stream; returns everything that became decodable."""
        self._check_usable()
        if len(data) > self.config.max_pending_bytes:
            # Checked here too, so raw input gets the same bound as containers.
            self._error = DecodeError(
                INPUT_TOO_LARGE,
                f"a {len(data)}-byte frame exceeds the limit of {self.config.max_pending_bytes} bytes",
            )
            raise self._error
        return self._guard(lambda: self._source.decode(data))

    def take_video(self) -> ContainerVideo:
        """Container video since the last call: frames due, in media-time order, the running counts
        and a video error not yet reported (empty for raw audio or a session without video)."""
        return self._source.take_video() if isinstance(self._source, _ContainerSource) else ContainerVideo()

    def flush(self) -> list[DecodedAudio]:
        """End of stream: return the rest (resampler tail included). Further decode calls fail."""
        self._check_usable()
        self._flushed = True
        return self._guard(self._source.flush)

    def close(self) -> None:
        """Release everything (the demux thread included). Idempotent; safe from another thread."""
        self._closed = True
        self._source.close()

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise DecodeError(DECODER_CLOSED, "decoder is closed")
        if self._flushed:
            raise DecodeError(DECODER_CLOSED, "decoder was flushed; the stream has ended")

    def _guard(self, call) -> list[DecodedAudio]:
        try:
            return _coalesce(call())
        except DecodeError as error:
            self._error = error
            raise
        except Exception as error:  # PyAV raises many types; a client's bytes must not crash the server
            self._error = DecodeError(
                DECODE_FAILED, f"{self.format.encoding} audio could not be decoded: {error}"
            )
            raise self._error from error
