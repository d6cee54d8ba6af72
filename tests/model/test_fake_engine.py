"""The fake engine proves the engine contract: timed audio and video in, captions and
interpretations out, instructions changed mid-session."""

from __future__ import annotations

import numpy as np

from patchstream.model.api import AudioChunk, Engine, MediaKind, SessionControl, SessionOptions, VideoFrame
from patchstream.model.fake_engine import FakeEngine


def frame(level: int, at_sample: int) -> VideoFrame:
    return VideoFrame(np.full((36, 64, 3), level, np.uint8), at_sample)


def test_it_declares_audio_and_video_and_honours_the_protocol():
    engine = FakeEngine()
    assert isinstance(engine, Engine)
    assert engine.spec.media == {MediaKind.AUDIO, MediaKind.VIDEO} and engine.spec.video_fps > 0


def test_video_frames_become_interpretations_partial_then_final():
    engine = FakeEngine()
    state = engine.open(SessionOptions(instruction="describe the slide"))
    engine.feed(state, frame(10, 0))
    (first,) = engine.step([state])[0].interpretations
    assert (first.interpretation_id, first.final, first.kind) == ("v0", False, "description")
    assert first.text == "describe the slide: frame 0, 64x36, mean 10"
    engine.feed(state, frame(200, 16_000))
    updates = engine.step([state])[0].interpretations
    assert [(u.interpretation_id, u.final, u.start) for u in updates] == [("v0", True, 0.0), ("v1", False, 1.0)]
    engine.control(state, SessionControl(instruction="count the people"))
    (last,) = engine.finish(state).interpretations
    assert last.final and last.text.startswith("count the people: frame 1")


def test_audio_and_video_in_one_session_give_captions_and_interpretations():
    engine = FakeEngine()
    state = engine.open(SessionOptions())
    tone = (0.3 * np.sin(np.arange(640 * 10) / 3)).astype(np.float32)
    engine.feed(state, AudioChunk(tone, 0))
    engine.feed(state, frame(0, 3_200))
    result = engine.finish(state)
    assert [w.text for w in result.captions.committed] == ["w0"]
    assert [u.interpretation_id for u in result.interpretations] == ["v0"]
    assert result.processed_until == 0.4
