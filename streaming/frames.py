"""Sans-I/O video frame rules: image headers, the frame sampler, the declared-rate guard and the
byte-bounded queue of images waiting for decode.

It is: the decisions about a video frame that need no pixels. `probe_image` reads a JPEG's or
PNG's dimensions from its header, so a decompression bomb (a small file of 16k x 16k pixels) is
refused before a single pixel is decoded. `FrameSampler` keeps frames at most at a given rate on
the media clock (the engine's `spec.video_fps`); it is the one due-rule, applied once to each frame
where it enters: by the session protocol to an image (checked before decoding, the slot taken only
by a frame that decoded), by the demux thread to a container frame (before resizing, and before
decoding where the codec can skip the frame). The scheduler trusts what it is given.
`FrameRateGuard` notices a client sending frames far faster than the rate it declared in `start`.
`ImageQueue` holds images waiting for decode within a byte budget (latest frame wins).
`ContainerVideo` is what the demux thread reports about a container's video track.

It is not: a decoder or a resizer (`video_decode.py` holds the PyAV work); the frames waiting for
the model live in the scheduler (latest frames win).
"""

from __future__ import annotations

import enum
import itertools
import struct
from collections import OrderedDict
from dataclasses import dataclass

from patchstream.model.api import VideoFrame, seconds_to_samples
from patchstream.streaming.protocol import CodedError, ErrorCode

MAX_IMAGE_PIXELS = 7680 * 4320  # 8K UHD; a frame claiming more is refused from its header (bomb)
SAMPLER_TOLERANCE = 0.1  # a frame up to 10 % early still counts as due (client clocks jitter)
RATE_GUARD_SLACK = 2.0  # frames closer than half the declared spacing are "far above" the rate

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# JPEG start-of-frame markers (they carry the dimensions): C0..CF except DHT, JPG and DAC.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length field


class ImageFormat(enum.StrEnum):
    JPEG = "jpeg"
    PNG = "png"


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says, before any pixel is decoded."""

    format: ImageFormat  # from the file signature, not from what the client declared
    height: int  # pixels
    width: int  # pixels


def _bad(message: str) -> CodedError:
    return CodedError(ErrorCode.BAD_IMAGE, message)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise _bad("the JPEG's marker segments are corrupt")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_STANDALONE:
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _JPEG_SOF:
            if at + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return height, width
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            break
        at += 2 + length
    raise _bad("the JPEG has no frame header")


def probe_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageInfo:
    """The image's format and size from its header; `CodedError` for what must not be decoded."""
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise _bad("the PNG has no IHDR header")
        width, height = struct.unpack(">II", data[16:24])
        info = ImageInfo(ImageFormat.PNG, height, width)
    elif data.startswith(_JPEG_SOI):
        height, width = _jpeg_size(data)
        info = ImageInfo(ImageFormat.JPEG, height, width)
    else:
        raise _bad("the frame is neither a JPEG nor a PNG image")
    if info.height <= 0 or info.width <= 0:
        raise _bad(f"the {info.format} declares a {info.width}x{info.height} image")
    if info.height * info.width > max_pixels:
        raise CodedError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"a {info.width}x{info.height} {info.format} exceeds {max_pixels} pixels; it was not decoded",
        )
    return info


class FrameSampler:
    """Keeps frames at most `fps` per media second: a frame is due once 1/fps (less the
    tolerance) has passed since the last one kept. Media time only, never arrival time."""

    def __init__(self, fps: float):
        self.spacing = seconds_to_samples(1.0 / fps)  # samples between kept frames
        self._due_after = int(self.spacing * (1 - SAMPLER_TOLERANCE))
        self.last: int | None = None  # media time of the last frame kept

    def due(self, start_sample: int) -> bool:
        """Whether a frame at this media time would be kept (nothing changes)."""
        return self.last is None or start_sample - self.last >= self._due_after

    def admit(self, start_sample: int) -> bool:
        """Keep the frame if it is due, and remember it (call it for a frame that is really kept)."""
        if not self.due(start_sample):
            return False
        self.last = start_sample
        return True


class FrameRateGuard:
    """Refuses frames far faster (media time) than the rate the client declared, or going backwards."""

    def __init__(self, declared_fps: float):
        self._min_gap = seconds_to_samples(1.0 / (declared_fps * RATE_GUARD_SLACK))
        self._last: int | None = None  # media time of the last frame accepted

    def check(self, start_sample: int) -> None:
        """CodedError(frame_rate_exceeded / bad_message) for a frame to drop; else accept it."""
        if self._last is not None and start_sample < self._last:
            raise CodedError(ErrorCode.BAD_MESSAGE, "frame times must not go backwards; the frame was dropped")
        if self._last is not None and start_sample - self._last < self._min_gap:
            raise CodedError(
                ErrorCode.FRAME_RATE_EXCEEDED,
                "frames arrive far faster than the `video.fps` declared in `start`; the frame was dropped",
            )
        self._last = start_sample


@dataclass(frozen=True)
class QueuedImage:
    """An announced image, its header checked, waiting for decode."""

    data: bytes  # the JPEG/PNG as received
    info: ImageInfo  # its format and size, from the header
    start_sample: int  # media time its `frame` message gave, 16 kHz samples


class ImageQueue:
    """Images waiting for decode, bounded by bytes. Drop rule: latest frame wins — a new image
    pushes out the oldest waiting ones until the bytes fit (each counted in `dropped`); the newest
    image always stays, whatever its size (`LimitsConfig.max_image_bytes` bounds that)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes  # bytes of waiting images beyond which the oldest go
        self.bytes = 0  # bytes waiting now
        self.dropped = 0  # images pushed out before they were decoded
        self._waiting: OrderedDict[int, QueuedImage] = OrderedDict()  # by ticket, oldest first
        self._tickets = itertools.count()

    def put(self, image: QueuedImage) -> int:
        """Queue an image; returns the ticket `take` redeems."""
        ticket = next(self._tickets)
        self._waiting[ticket] = image
        self.bytes += len(image.data)
        while self.bytes > self.max_bytes and len(self._waiting) > 1:
            _, oldest = self._waiting.popitem(last=False)
            self.bytes -= len(oldest.data)
            self.dropped += 1
        return ticket

    def take(self, ticket: int) -> QueuedImage | None:
        """The image queued under this ticket, or None if a newer one pushed it out."""
        image = self._waiting.pop(ticket, None)
        if image is not None:
            self.bytes -= len(image.data)
        return image


@dataclass(frozen=True)
class ContainerVideo:
    """What a container's video track produced since the last report, and its running counts."""

    frames: tuple[VideoFrame, ...] = ()  # patchified frames due at the engine's rate, in media-time order
    received: int = 0  # video frames the container has carried so far (decoded or skipped)
    dropped: int = 0  # due frames dropped so far before anyone collected them (latest frame wins)
    error: CodedError | None = None  # why the video track was just switched off (reported once); audio goes on
