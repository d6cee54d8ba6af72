"""The client's video half: a file's video track as timed JPEG frames, interpretations in the
terminal and in `--json`, and the `--vision` / `--no-video` options."""

from __future__ import annotations

import io
import json
from fractions import Fraction

import av
import numpy as np
import pytest

from patchstream.clients.cli import build_parser, main
from patchstream.clients.frame_reader import JpegFrameReader, has_video
from patchstream.clients.stream_client import ReceivedEvent
from patchstream.clients.terminal import TerminalOptions, TerminalRenderer
from patchstream.streaming.protocol import ParsedEvent

SR = 16_000
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]  # one per second


@pytest.fixture
def clip(tmp_path):
    """3 s of MP4: 5 fps frames, one colour per second; a tone cut by silences."""
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=5)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = out.add_stream("aac", rate=SR, layout="mono")
        t = np.arange(3 * SR) / SR
        wave = (0.3 * np.sin(2 * np.pi * 440 * t) * ((t % 1.0) < 0.6) * 32767).astype(np.int16)
        for number in range(15):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), COLOURS[number // 5], np.uint8), format="rgb24")
            frame.pts, frame.time_base = number, Fraction(1, 5)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for start in range(0, len(wave), 1024):
            piece = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="s16", layout="mono")
            piece.sample_rate, piece.pts, piece.time_base = SR, start, Fraction(1, SR)
            out.mux(audio.encode(piece))
        out.mux(audio.encode(None))
    return path


def test_frames_come_at_the_asked_rate_with_media_times_and_decode_to_the_picture(clip):
    reader = JpegFrameReader(clip, fps=1.0)
    first = reader.read(until_s=1.5)
    rest = reader.read(until_s=float("inf"))
    reader.close()
    frames = first + rest
    assert [round(f.time_s, 3) for f in first] == [0.0, 1.0] and [round(f.time_s, 3) for f in rest] == [2.0]
    for frame, colour in zip(frames, COLOURS):
        pixels = av.open(io.BytesIO(frame.data)).decode(video=0).__next__().to_ndarray(format="rgb24")
        assert np.abs(pixels.mean(axis=(0, 1)) - colour).max() < 12


def test_has_video_tells_video_files_from_audio_files(clip, tmp_path):
    wav = tmp_path / "a.wav"
    with av.open(str(wav), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, SR), np.int16), format="s16", layout="mono")
        frame.sample_rate = SR
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert has_video(clip) and not has_video(wav) and not has_video(tmp_path / "missing.mp4")


def received(fields: dict) -> ReceivedEvent:
    return ReceivedEvent(ParsedEvent(fields["type"], fields), 0.0, 0.0)


def test_the_terminal_prints_each_interpretation_once_beside_the_captions():
    out, err = io.StringIO(), io.StringIO()
    renderer = TerminalRenderer(TerminalOptions(out=out, err=err, live=False))
    text = {"interpretation_id": "t0", "kind": "text", "text": "Next steps\n- Hire two", "start": 4.0, "end": 4.0}
    renderer.handle(received({**text, "type": "interpretation.partial"}))
    renderer.handle(received({"type": "caption.final", "caption_id": "c0", "text": "Hello.", "start": 4.2, "end": 5.0}))
    renderer.handle(received({**text, "type": "interpretation.final", "end": 9.0}))
    assert out.getvalue().splitlines() == [
        "[00:04.000] <text> Next steps / - Hire two",
        "[00:04.200 → 00:05.000] Hello.",
    ]


def test_vision_parts_are_checked_and_reach_the_engine_choice():
    args = build_parser().parse_args(["serve", "--vision", "ocr,scenes"])
    assert args.vision == ("ocr", "scenes")
    assert build_parser().parse_args(["serve"]).vision == ("auto",)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--vision", "faces"])


def test_caption_streams_a_video_files_frames_and_prints_interpretations_as_json(clip, capsys):
    status = main(["caption", str(clip), "--json", "--fast", "--engine", "fake"])
    out, err = capsys.readouterr()
    assert status == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    finals = [e for e in events if e["type"] == "interpretation.final"]
    assert [f["frame_times"] for f in finals] == [[0.0], [1.0], [2.0]]  # the fake engine describes each frame
    assert all("432x336" in f["text"] for f in finals)  # 320x240 fitted to 70 soft tokens (upscaled)
    assert [e for e in events if e["type"] == "caption.final"]


def test_no_video_sends_only_the_audio(clip, capsys):
    assert main(["caption", str(clip), "--json", "--fast", "--engine", "fake", "--no-video"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert not [e for e in events if e["type"].startswith("interpretation")]
