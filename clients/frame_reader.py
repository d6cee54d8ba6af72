"""A media file's video track as JPEG frames at a chosen rate, stamped with media time.

It is: the video half of `patchstream caption FILE`. A `JpegFrameReader` opens the file on its
own (a second PyAV container beside the audio reader, so each decodes at its own pace), decodes
the first video stream, keeps at most `fps` frames per second of media time (the newest frame due
at each tick), scales anything larger than 1280 px wide down to it, and encodes each kept frame
as a JPEG (PyAV's mjpeg encoder: no image library needed). Media time is the frame's timestamp
counted from the audio stream's first timestamp, the audio reader's media time 0, so frames and
captions share one clock. Blocking: call it from a worker thread.

It is not: a sender (`stream_client.py` interleaves frames with the audio) and not a sampler the
server trusts: the server samples again at its engine's rate.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av

MAX_WIDTH = 1280  # wider frames are scaled down before encoding: 720p keeps slide text legible
JPEG_PIXEL_FORMAT = "yuvj420p"  # full-range 4:2:0, what the mjpeg encoder takes


@dataclass(frozen=True)
class JpegFrame:
    """One encoded frame and its media time."""

    time_s: float  # media seconds since the file's first timestamp
    data: bytes  # a whole JPEG


def encode_jpeg(frame: av.VideoFrame) -> bytes:
    """One frame as a JPEG, scaled down to MAX_WIDTH (even sides, as 4:2:0 wants)."""
    width, height = frame.width, frame.height
    if width > MAX_WIDTH:
        width, height = MAX_WIDTH, round(height * MAX_WIDTH / width)
    width, height = width - width % 2, height - height % 2
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, JPEG_PIXEL_FORMAT
    encoder.time_base = Fraction(1, 1)
    packets = encoder.encode(frame.reformat(width=width, height=height, format=JPEG_PIXEL_FORMAT))
    return b"".join(bytes(packet) for packet in packets)


def has_video(path: str | Path) -> bool:
    """Whether PyAV finds a video stream in the file (cover art counts only if it is a real stream)."""
    try:
        with av.open(str(path)) as container:
            return any(stream.frames != 1 for stream in container.streams.video)
    except (av.error.FFmpegError, OSError):
        return False


class JpegFrameReader:
    """Lazily decode and encode the frames due at `fps` (see the module docstring)."""

    def __init__(self, path: str | Path, fps: float = 1.0):
        self._container = av.open(str(path))
        self._stream = self._container.streams.video[0]
        self._spacing = 1.0 / fps
        clock = self._container.streams.audio[0] if self._container.streams.audio else self._stream
        # Media time 0: the audio's first timestamp (the audio reader counts from there).
        self._origin = float(clock.start_time * clock.time_base) if clock.start_time is not None else 0.0
        self._frames = self._due()
        self._lock = threading.Lock()  # read and close may come from different threads
        self._closed = False

    def read(self, until_s: float) -> list[JpegFrame]:
        """The frames due before media time `until_s` not yet returned ([] once exhausted)."""
        out = []
        with self._lock:
            while not self._closed:
                if self._next is None:
                    self._next = next(self._frames, None)
                    if self._next is None:
                        break
                if self._next.time_s >= until_s:
                    break
                out.append(self._next)
                self._next = None
        return out

    _next: JpegFrame | None = None  # decoded ahead, due later than the last read asked for

    def _due(self) -> Iterator[JpegFrame]:
        next_due = 0.0
        for frame in self._container.decode(self._stream):
            if frame.time is None:
                continue
            time_s = frame.time - self._origin
            if time_s + 1e-6 >= next_due:
                while next_due <= time_s + 1e-6:
                    next_due += self._spacing
                yield JpegFrame(max(0.0, time_s), encode_jpeg(frame))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._container.close()
