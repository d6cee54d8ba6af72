"""The CPU interpretation engine (scene changes, on-screen text) and the composite engine that
serves it beside a caption engine. OCR tests read rendered slides with the bundled RapidOCR models
and no network; they are `slow` (a real model, about a second a frame on one core)."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from patchstream.model.api import (
    AudioChunk,
    CaptionUpdate,
    EngineChoice,
    EngineError,
    EngineSpec,
    InterpretationUpdate,
    MediaKind,
    PartialStepError,
    SessionControl,
    SessionOptions,
    StepResult,
    VideoFrame,
)
from patchstream.model.composite_engine import CompositeEngine
from patchstream.model.engines import build_engine, resolve_vision
from patchstream.model.fake_engine import FakeEngine, FakeEngineConfig
from patchstream.model.ocr import OcrLine
from patchstream.model.scene import SceneDetector, thumbnail
from patchstream.model.vision_engine import SCENE, TEXT, VisionEngine, VisionEngineConfig

SECOND = 16_000


def solid(rgb, size=(288, 512)) -> np.ndarray:
    return np.full((*size, 3), rgb, np.uint8)


def test_thumbnail_is_the_block_mean_of_the_grey_frame():
    frame = np.zeros((36, 64, 3), np.uint8)
    frame[:18] = 255
    thumb = thumbnail(frame)
    assert thumb.shape == (18, 32)
    assert np.allclose(thumb[:9], 1.0, atol=1e-3) and np.allclose(thumb[9:], 0.0)


def test_a_cut_is_found_and_a_steady_or_noisy_picture_is_not():
    rng = np.random.default_rng(0)
    detector = SceneDetector()
    base = solid((40, 80, 160))
    noisy = [np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8) for _ in range(5)]
    assert [detector.push(thumbnail(f)) for f in noisy] == [False] * 5
    assert detector.push(thumbnail(solid((200, 60, 30)))) is True
    assert detector.push(thumbnail(solid((200, 60, 30)))) is False


def scene_engine() -> VisionEngine:
    return VisionEngine(VisionEngineConfig(kinds=frozenset({SCENE})))


def test_scene_changes_are_final_at_once_and_bracket_the_cut():
    engine = scene_engine()
    state = engine.open(SessionOptions())
    updates = []
    for second, colour in enumerate([(0, 0, 200)] * 3 + [(200, 0, 0)] * 3):
        engine.feed(state, VideoFrame(solid(colour), second * SECOND))
        updates += engine.step([state])[0].interpretations
    (cut,) = updates
    assert (cut.kind, cut.final, cut.start, cut.end, cut.frame_times) == (SCENE, True, 2.0, 3.0, (2.0, 3.0))


def test_the_vision_engine_takes_no_instruction_and_only_its_own_kinds():
    engine = scene_engine()
    with pytest.raises(EngineError, match="instruction"):
        engine.open(SessionOptions(instruction="describe"))
    with pytest.raises(EngineError, match="text"):
        engine.open(SessionOptions(interpretations=frozenset({TEXT})))
    state = engine.open(SessionOptions())
    engine.control(state, SessionControl(interpretations=frozenset()))
    for second, colour in enumerate([(0, 0, 200), (200, 0, 0)]):
        engine.feed(state, VideoFrame(solid(colour), second * SECOND))
    assert engine.step([state])[0].interpretations == ()  # scenes switched off mid-session


def test_composite_routes_audio_to_captions_and_video_to_interpretations():
    engine = CompositeEngine(FakeEngine(FakeEngineConfig(video_fps=0)), scene_engine())
    assert engine.spec.media == {"audio", "video"} and engine.spec.interpretations == {SCENE}
    assert engine.spec.video_fps == 1.0 and engine.spec.frame_soft_tokens == 280
    state = engine.open(SessionOptions())
    tone = (0.3 * np.sin(np.arange(SECOND) / 5)).astype(np.float32)
    engine.feed(state, AudioChunk(tone, 0))
    engine.feed(state, VideoFrame(solid((0, 0, 200)), 0))
    engine.feed(state, VideoFrame(solid((200, 0, 0)), SECOND))
    (result,) = engine.step([state])
    assert result.captions.tentative and [u.kind for u in result.interpretations] == [SCENE]
    # A step with new video but no new audio repeats the caption state; it never re-commits.
    engine.feed(state, VideoFrame(solid((0, 200, 0)), 2 * SECOND))
    (again,) = engine.step([state])
    assert again.captions.committed == () and again.captions.tentative == result.captions.tentative
    assert [u.kind for u in again.interpretations] == [SCENE]
    final = engine.finish(state)
    assert final.captions.committed and final.captions.segment_end
    engine.close(state)


def test_two_video_engines_do_not_compose():
    with pytest.raises(EngineError, match="already takes video"):
        CompositeEngine(FakeEngine(), scene_engine())


def test_the_registry_composes_on_request_and_resolves_auto():
    assert build_engine(EngineChoice("fake", options={"video_fps": 0}, vision=("scenes",))).spec.name == "fake+vision(scene)"
    assert resolve_vision(("none",)) == () and resolve_vision(("scenes", "scenes")) == ("scenes",)
    assert "scenes" in resolve_vision(("auto",))


# --- the OCR worker, with a stand-in reader: never waited on, one bad frame fails alone ---------------


class StandInReader:
    """Reads a frame's grey level as its text; raises on level 13; waits on `gate` when it is set."""

    def __init__(self, threads: int):
        self.gate: threading.Event | None = None
        self.freed = False

    def read(self, pixels: np.ndarray) -> list[OcrLine]:
        if self.gate is not None:
            self.gate.wait(30)
        level = int(pixels[0, 0, 0])
        if level == 13:
            raise ValueError("the OCR model choked on this frame")
        return [OcrLine(f"level {level}", 0.99, 0.0, 0.0)]


def text_engine() -> tuple[VisionEngine, StandInReader]:
    engine = VisionEngine(VisionEngineConfig(kinds=frozenset({TEXT})), reader=StandInReader)
    return engine, engine._reader


def settle(engine: VisionEngine) -> None:
    """Wait for the OCR batch in flight (the test's thread waits, never the engine)."""
    deadline = time.monotonic() + 30
    while engine._batch is not None and not engine._batch.done() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_finish_never_waits_for_the_ocr_and_drops_the_frame_being_read():
    engine, reader = text_engine()
    state, other = engine.open(SessionOptions()), engine.open(SessionOptions())
    engine.feed(state, VideoFrame(solid((50, 50, 50)), 0))
    engine.step([state])
    settle(engine)
    engine.step([state])  # "level 50" is on screen
    reader.gate = threading.Event()  # the OCR now takes as long as the test wants
    engine.feed(state, VideoFrame(solid((90, 90, 90)), SECOND))
    engine.step([state])  # level 90 is being read
    finished = []
    model_thread = threading.Thread(target=lambda: finished.append(engine.finish(state)))
    model_thread.start()
    model_thread.join(5)
    try:
        assert finished, "finish waited for the OCR worker on the model thread"
        (result,) = finished
        assert [(u.text, u.final, u.end) for u in result.interpretations] == [("level 50", True, 0.0)]
        assert result.dropped_frames == 1  # the frame in flight, never read now
        engine.feed(other, VideoFrame(solid((70, 70, 70)), 0))  # other sessions go on
    finally:
        reader.gate.set()
        model_thread.join(5)
    settle(engine)
    engine.step([other])
    settle(engine)
    assert [u.text for u in engine.step([other])[0].interpretations] == ["level 70"]
    engine.close(state)
    engine.close(other)


def test_a_frame_the_ocr_fails_on_is_dropped_alone_and_the_batch_still_delivers():
    engine, _ = text_engine()
    bad, good = engine.open(SessionOptions()), engine.open(SessionOptions())
    engine.feed(bad, VideoFrame(solid((13, 13, 13)), 0))
    engine.feed(good, VideoFrame(solid((40, 40, 40)), 0))
    engine.step([bad, good])  # one batch of both frames
    settle(engine)
    bad_result, good_result = engine.step([bad, good])
    assert bad_result.interpretations == () and bad_result.dropped_frames == 1
    assert [u.text for u in good_result.interpretations] == ["level 40"]
    engine.feed(bad, VideoFrame(solid((20, 20, 20)), SECOND))  # the bad session's next frame is read
    engine.step([bad])
    settle(engine)
    assert [u.text for u in engine.step([bad])[0].interpretations] == ["level 20"]


def test_shutdown_frees_the_ocr_worker_and_its_reader():
    engine, _ = text_engine()
    state = engine.open(SessionOptions())
    engine.feed(state, VideoFrame(solid((40, 40, 40)), 0))
    engine.step([state])
    worker = engine._worker
    engine.shutdown()
    assert engine._reader is None and worker._shutdown and not any(t.is_alive() for t in worker._threads)
    engine.shutdown()  # twice is harmless
    composite = CompositeEngine(FakeEngine(FakeEngineConfig(video_fps=0)), text_engine()[0])
    composite.shutdown()
    assert composite.vision._reader is None


class _BrokenVision:
    """A video engine whose step fails for the state named "bad" alone, or for the whole batch."""

    spec = EngineSpec("broken", media=frozenset({MediaKind.VIDEO}), video_fps=1.0, interpretations=frozenset({"x"}))

    def __init__(self, whole_batch: bool):
        self.whole_batch = whole_batch

    def open(self, options):
        return options.prompt or "ok"

    def feed(self, state, media):
        pass

    def step(self, states):
        if "bad" in states and (self.whole_batch or len(states) == 1):
            raise RuntimeError("vision broke")
        seen = StepResult(interpretations=(InterpretationUpdate("i", "seen", 0, 0, True, "x"),))
        if "bad" in states:
            raise PartialStepError([RuntimeError("vision broke") if s == "bad" else seen for s in states])
        return [seen for _ in states]


@pytest.mark.parametrize("whole_batch", [False, True])
def test_a_session_failing_in_the_vision_engine_keeps_the_others_captions(whole_batch):
    captions = FakeEngine(FakeEngineConfig(video_fps=0))
    engine = CompositeEngine(captions, _BrokenVision(whole_batch))
    bad, good = engine.open(SessionOptions()), engine.open(SessionOptions())
    bad.vision = "bad"
    tone = (0.3 * np.sin(np.arange(SECOND) / 5)).astype(np.float32)
    for state in (bad, good):
        engine.feed(state, AudioChunk(tone, 0))
    with pytest.raises(PartialStepError) as partial:
        engine.step([bad, good])
    failed, delivered = partial.value.results
    assert isinstance(failed, RuntimeError)
    assert delivered.captions.tentative and [u.text for u in delivered.interpretations] == ["seen"]
    assert delivered.captions != CaptionUpdate()  # the caption step's own update, not lost


# --- on-screen text (a real OCR model) ------------------------------------------------------------


def slide(lines: list[str], background=(30, 60, 120)) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415 - the test extra

    image = Image.new("RGB", (1056, 576), background)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=56)
    for index, line in enumerate(lines):
        draw.text((60, 80 + 150 * index), line, fill="white", font=font)
    return np.asarray(image)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the OCR tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.slow
def test_on_screen_text_is_read_offline_once_per_slide_and_closed_when_it_changes(no_network):
    pytest.importorskip("rapidocr")
    engine = VisionEngine(VisionEngineConfig(kinds=frozenset({TEXT})))
    state = engine.open(SessionOptions())
    slides = [slide(["Quarterly results", "Revenue grew 12 percent"]), slide(["Next steps", "Hire two engineers"])]
    updates = []
    for second in range(6):
        engine.feed(state, VideoFrame(slides[second >= 3], second * SECOND))
        updates += engine.step([state])[0].interpretations
        deadline = time.monotonic() + 10
        while engine._batch is not None and not engine._batch.done() and time.monotonic() < deadline:
            time.sleep(0.05)  # let the OCR worker finish, so every frame is read in this test
    updates += engine.finish(state).interpretations
    assert [(u.interpretation_id, u.final) for u in updates] == [("t0", False), ("t0", True), ("t1", False), ("t1", True)]
    assert updates[0].text == "Quarterly results\nRevenue grew 12 percent"
    assert (updates[1].start, updates[1].end) == (0.0, 2.0)
    assert updates[3].text == "Next steps\nHire two engineers" and (updates[3].start, updates[3].end) == (3.0, 5.0)
