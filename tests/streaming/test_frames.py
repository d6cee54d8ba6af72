"""The sans-I/O frame rules (header probe, sampler, declared-rate guard) and the PyAV patchifier,
whose sizes and positions are the Gemma pre-processing's own."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from patchstream.model.api import PATCH_PX
from patchstream.streaming.frames import FrameRateGuard, FrameSampler, ImageFormat, probe_image
from patchstream.streaming.protocol import CodedError
from patchstream.streaming.video_decode import decode_image, patchify


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_probe_reads_the_size_from_the_header(fmt):
    data = encoded(np.zeros((123, 457, 3), np.uint8), fmt)
    info = probe_image(data)
    assert (info.format, info.height, info.width) == (ImageFormat(fmt.lower()), 123, 457)


def test_probe_refuses_a_bomb_from_the_header_alone():
    header_only = encoded(np.zeros((8, 8, 3), np.uint8), "PNG")[:33]  # signature + IHDR, no pixels
    bomb = header_only[:16] + (16_384).to_bytes(4, "big") * 2 + header_only[24:]
    with pytest.raises(CodedError) as refused:
        probe_image(bomb)
    assert refused.value.code == "image_too_large"


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"\xff\xd8\xff\xda\x00\x02", b"\x89PNG\r\n\x1a\nxxxx"])
def test_probe_refuses_what_is_not_a_readable_jpeg_or_png(data):
    with pytest.raises(CodedError) as refused:
        probe_image(data)
    assert refused.value.code == "bad_image"


def test_the_sampler_keeps_frames_at_its_rate_with_some_tolerance_for_jitter():
    sampler = FrameSampler(1.0)
    times = [0, 4_000, 15_000, 20_000, 31_000, 47_999]  # samples at 16 kHz
    assert [sampler.admit(t) for t in times] == [True, False, True, False, True, True]


def test_the_rate_guard_refuses_far_faster_frames_and_time_going_backwards():
    guard = FrameRateGuard(declared_fps=2.0)
    guard.check(0)
    guard.check(4_000)  # 4 fps: within twice the declared rate
    with pytest.raises(CodedError, match="faster"):
        guard.check(5_000)
    with pytest.raises(CodedError, match="backwards"):
        guard.check(1_000)


def test_patchify_sizes_and_positions_frames_by_the_gemma_rule():
    gemma = pytest.importorskip("patchstream.model.gemma4_processing")
    pixels = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    frame = patchify(av.VideoFrame.from_ndarray(pixels, format="rgb24"), 16_000, 280)
    reference = gemma.patchify_image(pixels, 280)
    count = reference.num_soft_tokens[0]
    height, width = frame.pixels.shape[:2]
    assert height % PATCH_PX == 0 and width % PATCH_PX == 0
    assert (height // PATCH_PX) * (width // PATCH_PX) == count
    assert np.array_equal(frame.positions, reference.image_position_ids[0, :count].numpy())
    assert frame.source_size == (720, 1280) and frame.start_sample == 16_000
    # Different kernels (FFmpeg's bicubic, torch's antialiased bicubic): close, not equal.
    ours = frame.pixels.reshape(height // PATCH_PX, PATCH_PX, width // PATCH_PX, PATCH_PX, 3).transpose(0, 2, 1, 3, 4)
    theirs = reference.pixel_values[0, :count].numpy().reshape(-1, PATCH_PX, PATCH_PX, 3) * 255
    assert np.abs(ours.reshape(theirs.shape) - theirs).mean() < 40  # noise image: the hardest case


def test_decode_image_gives_the_budget_size_and_refuses_damage():
    data = encoded(np.full((360, 640, 3), 200, np.uint8), "JPEG")
    frame = decode_image(data, probe_image(data), 0, 70)
    assert frame.pixels.shape == (288, 528, 3) and abs(int(frame.pixels.mean()) - 200) <= 2
    with pytest.raises(CodedError) as refused:
        decode_image(data[: len(data) // 2], probe_image(data), 0, 70)
    assert refused.value.code == "bad_image"


def test_a_picture_that_cannot_be_resized_is_a_clear_bad_image_error(monkeypatch):
    import patchstream.streaming.video_decode as video_decode

    def refuse(height, width, budget):
        raise ValueError(f"cannot fit a {height}x{width} image")

    monkeypatch.setattr(video_decode, "fit_to_budget", refuse)
    data = encoded(np.zeros((30, 40, 3), np.uint8), "PNG")
    with pytest.raises(CodedError) as refused:
        decode_image(data, probe_image(data), 0, 70)
    assert refused.value.code == "bad_image" and "40x30" in refused.value.message and "resized" in refused.value.message


def test_the_image_queue_keeps_the_newest_within_its_bytes():
    from patchstream.streaming.frames import ImageQueue, QueuedImage

    info = probe_image(encoded(np.zeros((8, 8, 3), np.uint8), "PNG"))
    queue = ImageQueue(max_bytes=25)
    tickets = [queue.put(QueuedImage(bytes(10), info, t)) for t in range(4)]
    assert (queue.bytes, queue.dropped) == (20, 2)
    assert [queue.take(t) is not None for t in tickets] == [False, False, True, True] and queue.bytes == 0
    huge = queue.put(QueuedImage(bytes(100), info, 9))  # the newest stays, whatever its size
    assert queue.take(huge).start_sample == 9
