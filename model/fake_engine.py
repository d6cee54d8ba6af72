"""A deterministic fake engine for server tests and protocol demos: no model, exact times.

It is: an `Engine` that turns every stretch of non-silent audio (a "burst") into one word named
after its position (`w0`, `w1`, ...), shows a burst as a tentative word while it is still
sounding, commits it once `commit_delay_s` of audio has followed it, ends every third word with
a full stop, and commits everything on `finish`. Word times are the burst's media times.
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
    SessionOptions,
    Word,
    samples_to_seconds,
)

SILENCE_RMS = 0.01  # a 40 ms frame quieter than this is silence


@dataclass(frozen=True)
class FakeEngineConfig:
    """Knobs of the fake."""

    commit_delay_s: float = 0.2  # audio after a burst's end before its word is committed
    min_step_s: float = 0.12  # new audio per step the server should wait for
    max_batch: int = 4  # sessions per step (the fake has no real batching, but honours the API)


@dataclass
class FakeSession:
    """Per-session state: where bursts begin and end, and what is committed."""

    frames_seen: int = 0  # 40 ms frames fed
    burst_start: int | None = None  # frame index where the current burst began
    bursts: list[tuple[int, int]] = field(default_factory=list)  # closed bursts (first, end) frames
    committed: int = 0  # bursts already committed
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
            max_batch=config.max_batch,
            min_step_samples=int(config.min_step_s * 16_000) // SAMPLES_PER_AUDIO_TOKEN * SAMPLES_PER_AUDIO_TOKEN,
            word_timestamps=True,
        )

    def open(self, options: SessionOptions) -> FakeSession:
        return FakeSession()

    def feed(self, state: FakeSession, chunk: AudioChunk) -> None:
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

    def step(self, states: Sequence[FakeSession]) -> list[CaptionUpdate]:
        return [self._update(state, commit_all=False) for state in states]

    def finish(self, state: FakeSession) -> CaptionUpdate:
        self._close_burst(state)
        return self._update(state, commit_all=True)

    def _update(self, state: FakeSession, commit_all: bool) -> CaptionUpdate:
        delay = int(self.config.commit_delay_s * 16_000 / SAMPLES_PER_AUDIO_TOKEN)
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


def build(choice: EngineChoice) -> FakeEngine:
    """Registry entry (`model.engines`): knobs come from `choice.options`."""
    known = {k: v for k, v in choice.options.items() if k in FakeEngineConfig.__dataclass_fields__}
    return FakeEngine(FakeEngineConfig(**known))
