"""A deterministic fake engine for server tests and protocol demos: no model, exact times.

It is: an `Engine` that turns every stretch of non-silent audio (a "burst") into one word named
after its position (`w0`, `w1`, ...), shows a burst as a tentative word while it is still
sounding, commits it once `commit_delay_s` of audio has followed it, ends every third word with
a full stop, and commits everything on `finish`. Word times are the burst's media times.
It also takes video: every frame becomes one interpretation (`v0`, `v1`, ...) of kind
"description" whose text names the session's instruction, the frame size and its mean level;
it is partial until a newer frame arrives (or the stream finishes), then final.
It is not: a recogniser. It exists so the server, client and their tests run without weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from patchstream.model.api import (
    SAMPLES_PER_AUDIO_TOKEN,
    AudioChunk,
    CaptionUpdate,
    EngineChoice,
    EngineSpec,
    InterpretationUpdate,
    MediaKind,
    SessionControl,
    SessionOptions,
    StepResult,
    VideoFrame,
    Word,
    samples_to_seconds,
    seconds_to_samples,
)

SILENCE_RMS = 0.01  # a 40 ms frame quieter than this is silence


@dataclass(frozen=True)
class FakeEngineConfig:
    """Knobs of the fake."""

    commit_delay_s: float = 0.2  # audio after a burst's end before its word is committed
    min_step_s: float = 0.12  # new audio per step the server should wait for
    max_batch: int = 4  # sessions per step (the fake has no real batching, but honours the API)
    video_fps: float = 2.0  # video frames per media second it asks the server for; 0 = audio only


@dataclass
class FakeSession:
    """Per-session state: where bursts begin and end, and what is committed."""

    frames_seen: int = 0  # 40 ms frames fed
    burst_start: int | None = None  # frame index where the current burst began
    bursts: list[tuple[int, int]] = field(default_factory=list)  # closed bursts (first, end) frames
    committed: int = 0  # bursts already committed
    instruction: str = ""  # what the interpretations say they were asked (SessionOptions/control)
    frames: list[VideoFrame] = field(default_factory=list)  # video frames fed, in order
    frames_final: int = 0  # frames whose interpretation was sent final
    closed: bool = False


def _word(index: int, first: int, end: int) -> Word:
    text = f"w{index}" + ("." if index % 3 == 2 else "")
    start_s = samples_to_seconds(first * SAMPLES_PER_AUDIO_TOKEN)
    end_s = samples_to_seconds(end * SAMPLES_PER_AUDIO_TOKEN)
    return Word(text, start_s, end_s, 0.9)


class FakeEngine:
    """The fake recogniser (see the module docstring)."""

    def __init__(self, config: FakeEngineConfig = FakeEngineConfig()):
        self.config = config
        self.spec = EngineSpec(
            name="fake",
            media=frozenset({MediaKind.AUDIO, MediaKind.VIDEO} if config.video_fps > 0 else {MediaKind.AUDIO}),
            video_fps=config.video_fps,
            interpretations=frozenset({"description"} if config.video_fps > 0 else ()),
            max_batch=config.max_batch,
            min_step_samples=seconds_to_samples(config.min_step_s) // SAMPLES_PER_AUDIO_TOKEN * SAMPLES_PER_AUDIO_TOKEN,
        )

    def open(self, options: SessionOptions) -> FakeSession:
        return FakeSession(instruction=options.instruction)

    def control(self, state: FakeSession, control: SessionControl) -> None:
        if control.instruction is not None:
            state.instruction = control.instruction

    def feed(self, state: FakeSession, media: AudioChunk | VideoFrame) -> None:
        if isinstance(media, VideoFrame):
            state.frames.append(media)
            return
        self._feed_audio(state, media)

    def _feed_audio(self, state: FakeSession, chunk: AudioChunk) -> None:
        if chunk.discontinuity:
            self._close_burst(state)
            state.frames_seen = chunk.start_sample // SAMPLES_PER_AUDIO_TOKEN
        frames = chunk.samples.reshape(-1, SAMPLES_PER_AUDIO_TOKEN)
        loud = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) > SILENCE_RMS
        for is_loud in loud:
            if is_loud and state.burst_start is None:
                state.burst_start = state.frames_seen
            elif not is_loud:
                self._close_burst(state)
            state.frames_seen += 1

    def _close_burst(self, state: FakeSession) -> None:
        if state.burst_start is not None:
            state.bursts.append((state.burst_start, state.frames_seen))
            state.burst_start = None

    def step(self, states: Sequence[FakeSession]) -> list[StepResult]:
        return [StepResult(self._update(state, False), self._interpret(state, False)) for state in states]

    def finish(self, state: FakeSession) -> StepResult:
        self._close_burst(state)
        return StepResult(self._update(state, commit_all=True), self._interpret(state, final=True))

    def _interpret(self, state: FakeSession, final: bool) -> tuple[InterpretationUpdate, ...]:
        """Frames not yet final: the older ones close, the newest stays partial (until `final`)."""
        updates = []
        for index in range(state.frames_final, len(state.frames)):
            frame = state.frames[index]
            height, width = frame.pixels.shape[:2]
            text = f"{state.instruction or 'describe'}: frame {index}, {width}x{height}, mean {frame.pixels.mean():.0f}"
            closed = final or index < len(state.frames) - 1
            time = frame.start_s
            updates.append(InterpretationUpdate(f"v{index}", text, time, time, closed, "description", (time,)))
        state.frames_final = len(state.frames) if final else max(state.frames_final, len(state.frames) - 1)
        return tuple(updates)

    def _update(self, state: FakeSession, commit_all: bool) -> CaptionUpdate:
        delay = seconds_to_samples(self.config.commit_delay_s) // SAMPLES_PER_AUDIO_TOKEN
        ready = [i for i, (_, end) in enumerate(state.bursts) if commit_all or state.frames_seen - end >= delay]
        newly = [_word(i, *state.bursts[i]) for i in ready if i >= state.committed]
        state.committed = max(state.committed, (ready[-1] + 1) if ready else 0)
        tentative = [_word(i, *state.bursts[i]) for i in range(state.committed, len(state.bursts))]
        if state.burst_start is not None and not commit_all:
            tentative.append(_word(len(state.bursts), state.burst_start, state.frames_seen))
        return CaptionUpdate(
            committed=tuple(newly),
            tentative=tuple(tentative),
            segment_end=commit_all or (not tentative and bool(newly)),
            processed_until=samples_to_seconds(state.frames_seen * SAMPLES_PER_AUDIO_TOKEN),
        )

    def close(self, state: FakeSession) -> None:
        state.closed = True
        state.bursts.clear()
        state.frames.clear()


def build(choice: EngineChoice) -> FakeEngine:
    """Registry entry (`model.engines`): knobs come from `choice.options`."""
    known = {k: v for k, v in choice.options.items() if k in FakeEngineConfig.__dataclass_fields__}
    return FakeEngine(FakeEngineConfig(**known))
