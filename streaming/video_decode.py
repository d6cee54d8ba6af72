"""Video frames from bytes: a JPEG/PNG message or a demuxed container frame → a patchified
`VideoFrame` at the engine's soft-token budget.

It is: the PyAV side of video. `decode_image` decodes one still image (after `frames.probe_image`
has checked its header, so no bomb is ever decompressed); `patchify` resizes a decoded frame to
the size Gemma 4's rule gives for the engine's per-frame budget (`model/patch_grid.fit_to_budget`:
whole 48 px patches, aspect kept) and attaches the patch positions (`patch_grid.patch_positions`).
The size rule and positions are the model's one implementation; the resize kernel is FFmpeg's
bicubic (swscale), not torch's, so pixels are close to but not bit-equal with
`gemma4_processing.patchify_image` (the Gemma engine, when it is wired in, may re-resize from
`source_size`).

It is not: async (the session calls it off the event loop) and not a sampler or a queue
(`frames.py`, the scheduler).
"""

from __future__ import annotations

import av
import numpy as np

from patchstream.model.api import VideoFrame
from patchstream.model.patch_grid import fit_to_budget, patch_positions
from patchstream.streaming.frames import ImageFormat, ImageInfo
from patchstream.streaming.protocol import CodedError, ErrorCode

_CODECS = {ImageFormat.JPEG: "mjpeg", ImageFormat.PNG: "png"}  # PyAV decoder of each image format
# FFmpeg conceals damage by default (a truncated JPEG decodes to a grey-bottomed picture); a frame
# an engine reads text from must be whole, so any damage is an error.
_DECODER_OPTIONS = {"err_detect": "explode"}


def patchify(frame: av.VideoFrame, start_sample: int, soft_tokens: int) -> VideoFrame:
    """Resize to the budget's size (multiples of 48 px), RGB, with patch positions and media time.
    `CodedError(bad_image)` when the picture cannot be converted (an odd pixel format or size)."""
    try:
        height, width = fit_to_budget(frame.height, frame.width, soft_tokens)
        pixels = frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray()
    except Exception as error:  # swscale and the size rule fail on what the client sent, not on the server
        raise CodedError(
            ErrorCode.BAD_IMAGE, f"a {frame.width}x{frame.height} {frame.format.name} picture could not be resized: {error}"
        ) from None
    return VideoFrame(
        pixels=np.ascontiguousarray(pixels),  # (height, width, 3) uint8
        start_sample=start_sample,
        positions=patch_positions(height, width),
        source_size=(frame.height, frame.width),
    )


def decode_image(data: bytes, info: ImageInfo, start_sample: int, soft_tokens: int) -> VideoFrame:
    """One JPEG/PNG (header already probed) → a patchified frame; `CodedError(bad_image)` if corrupt."""
    try:
        codec = av.CodecContext.create(_CODECS[info.format], "r")
        codec.options = dict(_DECODER_OPTIONS)
        frames = codec.decode(av.Packet(data)) + codec.decode(None)
    except Exception as error:  # any FFmpeg failure is the client's bytes, never the server
        raise CodedError(ErrorCode.BAD_IMAGE, f"the {info.format} could not be decoded: {error}") from None
    if not frames:
        raise CodedError(ErrorCode.BAD_IMAGE, f"the {info.format} held no picture")
    frame = frames[0]
    if (frame.height, frame.width) != (info.height, info.width):
        raise CodedError(ErrorCode.BAD_IMAGE, f"the {info.format}'s header and picture disagree on its size")
    return patchify(frame, start_sample, soft_tokens)
