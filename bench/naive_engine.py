"""The well-known naive streaming baseline, for benchmarks only: re-transcribe the growing buffer.

It is: an `Engine` over the same bundled tiny.en model that, every `step_s` of new audio, runs
faster-whisper's ordinary `transcribe` (30 s window, greedy, word timestamps, no VAD) over the
whole uncommitted buffer. Every word is tentative except the words of Whisper segments that are
followed by another segment (Whisper closed them, usually at a sentence end); those are
committed and the buffer is cut after them. A buffer past `max_buffer_s` is committed whole.
`finish` commits everything.

It is not: the CPU default engine (`model.whisper_engine.WhisperEngine` beats it on latency and
cost) and it is not used by the server; `bench/` measures it so the comparison is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from patchstream.model.api import (
    SAMPLE_RATE,
    SAMPLES_PER_AUDIO_TOKEN,
    AudioChunk,
    CaptionUpdate,
    EngineError,
    EngineSpec,
    SessionControl,
    SessionOptions,
    StepResult,
    Word,
    samples_to_seconds,
)
from patchstream.model.whisper_engine import load_whisper_model


@dataclass(frozen=True)
class NaiveEngineConfig:
    """Knobs of the baseline."""

    model_path: str | None = None  # CTranslate2 Whisper directory; None = bundled tiny.en
    step_s: float = 1.0  # re-transcribe after this much new audio ("every second")
    max_buffer_s: float = 25.0  # commit everything once the buffer is this long (Whisper sees 30 s)
    cpu_threads: int = 0  # CTranslate2 threads; 0 = one per core


@dataclass
class NaiveSession:
    """Per-session buffer (bounded by `max_buffer_s` plus one step) and its media origin."""

    options: SessionOptions
    chunks: list[np.ndarray] = field(default_factory=list)  # uncommitted audio since `origin`
    origin: int | None = None  # media sample of the buffer's first sample
    size: int = 0  # samples in `chunks`
    processed_until: float = 0.0  # media seconds transcribed so far


class NaiveRetranscribeEngine:
    """See module docstring."""

    def __init__(self, config: NaiveEngineConfig = NaiveEngineConfig()) -> None:
        self.config = config
        self.model = load_whisper_model(config.model_path, "int8", config.cpu_threads)
        step = int(config.step_s * SAMPLE_RATE) // SAMPLES_PER_AUDIO_TOKEN * SAMPLES_PER_AUDIO_TOKEN
        self.spec = EngineSpec(name="naive-retranscribe", max_batch=1, min_step_samples=step)

    def open(self, options: SessionOptions) -> NaiveSession:
        return NaiveSession(options=options)

    def feed(self, state: object, chunk: AudioChunk) -> None:
        s = _session(state)
        if s.origin is None:
            s.origin = chunk.start_sample
        # Time map: the baseline assumes contiguous audio; a jump is ignored (it is a baseline).
        s.chunks.append(np.asarray(chunk.samples, np.float32))
        s.size += len(chunk.samples)

    def control(self, state: object, control: SessionControl) -> None:
        raise EngineError("the naive baseline takes no mid-session control")

    def step(self, states: Sequence[object]) -> list[StepResult]:
        return [StepResult(self._advance(_session(s), final=False)) for s in states]

    def finish(self, state: object) -> StepResult:
        return StepResult(self._advance(_session(state), final=True))

    def close(self, state: object) -> None:
        _session(state).chunks.clear()

    def _advance(self, s: NaiveSession, final: bool) -> CaptionUpdate:
        if s.size == 0 or s.origin is None:
            return CaptionUpdate(processed_until=s.processed_until, segment_end=final)
        audio = np.concatenate(s.chunks)
        offset = samples_to_seconds(s.origin)
        segments, _ = self.model.transcribe(
            audio, language="en", beam_size=1, word_timestamps=True,
            condition_on_previous_text=False,
        )
        segments = [
            [Word(w.word.strip(), offset + w.start, offset + w.end, w.probability) for w in seg.words or []]
            for seg in segments
        ]
        s.processed_until = offset + len(audio) / SAMPLE_RATE
        commit_all = final or len(audio) >= self.config.max_buffer_s * SAMPLE_RATE
        done = segments if commit_all else segments[:-1]
        committed = [w for seg in done for w in seg]
        tentative = [] if commit_all else (segments[-1] if segments else [])
        if commit_all:
            cut = len(audio)
        elif committed:
            cut = min(len(audio), int(round((committed[-1].end - offset) * SAMPLE_RATE)))
        else:
            cut = 0
        if cut:
            rest = audio[cut:]
            s.chunks = [rest] if len(rest) else []
            s.size = len(rest)
            s.origin += cut
        return CaptionUpdate(
            committed=tuple(committed), tentative=tuple(tentative),
            segment_end=bool(committed), processed_until=s.processed_until,
        )


def _session(state: object) -> NaiveSession:
    if not isinstance(state, NaiveSession):
        raise EngineError("state was not opened by this NaiveRetranscribeEngine")
    return state
