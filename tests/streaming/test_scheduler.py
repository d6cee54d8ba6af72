"""The scheduler: fair batching, the backlog drop rule, failure isolation, finish/close order,
and obeying the engine's spec (media kinds, video rate). Waits are for events, never for time."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from patchstream.model.api import (
    AudioChunk,
    CaptionUpdate,
    EngineError,
    EngineSpec,
    MediaKind,
    PartialStepError,
    SessionControl,
    SessionOptions,
    StepResult,
    VideoFrame,
)
from patchstream.streaming.config import SchedulerConfig
from patchstream.streaming.scheduler import Scheduler

FRAME = 640


def chunk(start_frame: int, frames: int = 1, discontinuity: bool = False) -> AudioChunk:
    return AudioChunk(np.zeros(frames * FRAME, np.float32), start_frame * FRAME, discontinuity)


class RecordingEngine:
    """An engine that records every call; `gate` holds steps until a test releases them."""

    def __init__(self, max_batch: int = 2, media=frozenset({MediaKind.AUDIO}), video_fps: float = 0.0):
        self.spec = EngineSpec("recording", media=media, video_fps=video_fps, max_batch=max_batch, min_step_samples=FRAME)
        self.calls: list[tuple] = []  # ("feed", session, media) / ("step", sessions) / ...
        self.fail_feed_for: set[str] = set()
        self.fail_batched_step = False
        self.gate = None  # a threading.Event the model thread waits on in `step`
        self.fail_step_for: set[str] = set()  # sessions a batched step fails alone (PartialStepError)

    def open(self, options: SessionOptions) -> str:
        return options.prompt  # the state is the session's name

    def feed(self, state, media) -> None:
        if state in self.fail_feed_for:
            raise EngineError(f"{state} is doomed")
        self.calls.append(("feed", state, media))

    def control(self, state, control: SessionControl) -> None:
        self.calls.append(("control", state, control))

    def step(self, states):
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_batched_step and len(states) > 1:
            raise RuntimeError("the batch failed")
        self.calls.append(("step", tuple(states)))
        results = [
            EngineError(f"{state}'s frame broke") if state in self.fail_step_for else StepResult(CaptionUpdate(processed_until=1.0))
            for state in states
        ]
        if self.fail_step_for & set(states):
            raise PartialStepError(results)
        return results

    def finish(self, state) -> StepResult:
        self.calls.append(("finish", state))
        return StepResult(CaptionUpdate(segment_end=True))

    def close(self, state) -> None:
        self.calls.append(("close", state))


class Sink:
    """The session side of a slot: results and failures, with an event to wait on."""

    def __init__(self):
        self.results: list[StepResult] = []
        self.failures: list[Exception] = []
        self.changed = asyncio.Event()

    def on_result(self, result):
        self.results.append(result)
        self.changed.set()

    def on_failure(self, error):
        self.failures.append(error)
        self.changed.set()

    async def wait(self, condition):
        while not condition():
            self.changed.clear()
            await self.changed.wait()


@pytest.fixture
async def make():
    schedulers = []

    async def build(engine):
        scheduler = Scheduler(engine, SchedulerConfig())
        schedulers.append(scheduler)
        return scheduler

    yield build
    for scheduler in schedulers:
        await scheduler.stop()


async def open_slot(scheduler, name, backlog_s=30.0):
    sink = Sink()
    slot = await scheduler.open(SessionOptions(prompt=name), sink.on_result, sink.on_failure, backlog_s)
    return slot, sink


async def test_the_session_served_least_recently_goes_first(make):
    engine = RecordingEngine(max_batch=1)
    scheduler = await make(engine)
    (a, sink_a), (b, sink_b) = await open_slot(scheduler, "a"), await open_slot(scheduler, "b")
    engine.gate = threading.Event()  # hold the first step so both sessions have audio waiting
    await scheduler.start()
    scheduler.submit(a, chunk(0))
    for frame in range(1, 4):  # "a" keeps sending faster than "b"
        scheduler.submit(a, chunk(frame))
    scheduler.submit(b, chunk(0))
    engine.gate.set()
    await sink_b.wait(lambda: sink_b.results)
    steps = [call[1] for call in engine.calls if call[0] == "step"]
    # "a" went first (it was ready first); then "b", although "a" had more audio waiting.
    assert steps[:2] == [("a",), ("b",)]


async def test_sessions_are_batched_up_to_the_engines_limit(make):
    engine = RecordingEngine(max_batch=2)
    scheduler = await make(engine)
    slots = [await open_slot(scheduler, name) for name in "abc"]
    for slot, _ in slots:
        scheduler.submit(slot, chunk(0))
    await scheduler.start()
    await slots[2][1].wait(lambda: slots[2][1].results)
    steps = [call[1] for call in engine.calls if call[0] == "step"]
    assert steps == [("a", "b"), ("c",)]


async def test_backlog_beyond_its_bound_drops_the_oldest_and_flags_the_next(make):
    engine = RecordingEngine()
    scheduler = await make(engine)
    slot, sink = await open_slot(scheduler, "a", backlog_s=3 * FRAME / 16_000)
    dropped = [scheduler.submit(slot, chunk(frame)) for frame in range(5)]
    assert dropped == [0, 0, 0, FRAME, FRAME]  # the bound is 3 frames: two oldest go
    await scheduler.start()
    await sink.wait(lambda: sink.results)
    fed = [call[2] for call in engine.calls if call[0] == "feed"]
    assert [c.start_sample // FRAME for c in fed] == [2, 3, 4]
    assert [c.discontinuity for c in fed] == [True, False, False]  # never stitched across the hole


async def test_a_failing_session_in_a_batch_fails_alone(make):
    engine = RecordingEngine(max_batch=3)
    engine.fail_feed_for = {"bad"}
    engine.fail_batched_step = True  # and the batched step fails too: retried one by one
    scheduler = await make(engine)
    (good, good_sink), (bad, bad_sink), (other, other_sink) = [
        await open_slot(scheduler, name) for name in ("good", "bad", "other")
    ]
    for slot in (good, bad, other):
        scheduler.submit(slot, chunk(0))
    await scheduler.start()
    await bad_sink.wait(lambda: bad_sink.failures)
    await good_sink.wait(lambda: good_sink.results)
    await other_sink.wait(lambda: other_sink.results)
    assert "doomed" in str(bad_sink.failures[0]) and not bad_sink.results
    assert not good_sink.failures and not other_sink.failures
    scheduler.submit(bad, chunk(1))  # a failed session gets no more steps
    assert bad.backlog_samples == 0


async def test_a_partial_step_failure_fails_only_the_sessions_it_names_and_is_not_retried(make):
    engine = RecordingEngine(max_batch=2)
    engine.fail_step_for = {"bad"}
    scheduler = await make(engine)
    (good, good_sink), (bad, bad_sink) = [await open_slot(scheduler, name) for name in ("good", "bad")]
    for slot in (good, bad):
        scheduler.submit(slot, chunk(0))
    await scheduler.start()
    await bad_sink.wait(lambda: bad_sink.failures)
    await good_sink.wait(lambda: good_sink.results)
    assert "broke" in str(bad_sink.failures[0]) and not bad_sink.results and not good_sink.failures
    assert [call for call in engine.calls if call[0] == "step"] == [("step", ("good", "bad"))]  # one step, no retry


async def test_stop_shuts_the_engine_down_after_closing_its_sessions():
    engine = RecordingEngine()
    engine.shutdown = lambda: engine.calls.append(("shutdown",))
    scheduler = Scheduler(engine, SchedulerConfig())
    await scheduler.start()
    await open_slot(scheduler, "a")
    await scheduler.stop()
    assert engine.calls[-2:] == [("close", "a"), ("shutdown",)]
    await Scheduler(RecordingEngine(), SchedulerConfig()).stop()  # an engine without `shutdown` is fine


async def test_finish_feeds_what_waits_then_finishes_and_close_comes_last(make):
    engine = RecordingEngine()
    scheduler = await make(engine)
    slot, _ = await open_slot(scheduler, "a")
    scheduler.submit(slot, chunk(0))
    scheduler.submit(slot, chunk(1))
    result = await scheduler.finish(slot)
    assert result.captions.segment_end
    assert scheduler.submit(slot, chunk(2)) == 0 and slot.backlog_samples == 0  # nothing after finish
    await scheduler.close(slot)
    await scheduler.close(slot)  # twice is harmless
    kinds = [(call[0], getattr(call[-1], "start_sample", None)) for call in engine.calls]
    assert kinds == [("feed", 0), ("feed", FRAME), ("finish", None), ("close", None)]


async def test_media_the_engine_did_not_declare_is_refused(make):
    scheduler = await make(RecordingEngine())
    slot, _ = await open_slot(scheduler, "a")
    with pytest.raises(ValueError, match="video"):
        scheduler.submit(slot, VideoFrame(np.zeros((4, 4, 3), np.uint8), 0))


async def test_video_latest_frames_win_and_the_scheduler_does_not_sample_again(make):
    engine = RecordingEngine(media=frozenset({MediaKind.AUDIO, MediaKind.VIDEO}), video_fps=2.0)
    scheduler = await make(engine)
    slot, sink = await open_slot(scheduler, "a")
    half_second = 8_000
    # Frames come already sampled where they enter (the session): here 2 fps, the engine's rate.
    frames = [VideoFrame(np.full((4, 4, 3), i, np.uint8), i * half_second) for i in range(5)]
    for frame in frames:
        scheduler.submit(slot, frame)
    assert list(slot.video) == frames[3:]  # two frames wait, the newest taken
    assert slot.frames_dropped == 3  # pushed out by newer ones
    await scheduler.start()
    await sink.wait(lambda: sink.results)
    fed = [call[2] for call in engine.calls if call[0] == "feed"]
    assert fed == frames[3:]


async def test_control_reaches_the_engine_on_the_model_thread(make):
    engine = RecordingEngine()
    scheduler = await make(engine)
    slot, _ = await open_slot(scheduler, "a")
    await scheduler.control(slot, SessionControl(prompt="Patchstream"))
    assert engine.calls == [("control", "a", SessionControl(prompt="Patchstream"))]
