"""The engine interface: the only module of `model/` that `streaming/` imports.

It holds the media constants every engine agrees on, the frozen dataclasses that cross the
server/model boundary, and the `Engine` protocol that the Whisper CPU default, Gemma 4 unified and
the tests' fake engine all implement. It imports numpy and the standard library only, never torch,
so the server and its tests run without a model.

Call pattern (the server's scheduler owns a model thread and is the only caller):

    state = engine.open(SessionOptions(...))      # per session, on the model thread
    engine.feed(state, chunk)                     # append audio; cheap, no model work
    updates = engine.step([s1, s2, ...])          # model work; sessions batched together
    update = engine.finish(state)                 # end of stream: flush and commit everything
    engine.close(state)                           # free the state

Engines are not thread-safe: all calls for all sessions happen on one thread at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

SAMPLE_RATE = 16_000  # Hz; every engine consumes 16 kHz mono float32 audio
SAMPLES_PER_AUDIO_TOKEN = 640  # 40 ms: one Gemma 4 unified audio soft token, our chunk unit
PATCH_PX = 48  # side of one raw image patch fed to Gemma 4 unified, in pixels


def samples_to_seconds(samples: int, sample_rate: int = SAMPLE_RATE) -> float:
    """The one conversion from a sample index to media seconds."""
    return samples / sample_rate


def seconds_to_samples(seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    """The one conversion from media seconds to a sample index (rounded to nearest)."""
    return int(round(seconds * sample_rate))


@dataclass(frozen=True)
class EngineSpec:
    """What an engine wants from the server."""

    name: str  # human-readable engine name, reported to clients in `ready`
    sample_rate: int = SAMPLE_RATE  # Hz of the audio passed to `feed`
    samples_per_chunk: int = SAMPLES_PER_AUDIO_TOKEN  # chunks are whole multiples of this
    max_batch: int = 1  # how many sessions one `step` call can advance together
    min_step_samples: int = 0  # new audio a session needs before another `step` is useful
    word_timestamps: bool = False  # whether `Word.start`/`end` come from the model


@dataclass(frozen=True)
class SessionOptions:
    """Per-session choices a client makes in its `start` message."""

    language: str = "en"  # BCP-47-ish language code of the speech
    task: str = "transcribe"  # "transcribe" for captions
    prompt: str = ""  # domain words or context that bias recognition


@dataclass(frozen=True)
class AudioChunk:
    """Whole 40 ms frames of 16 kHz audio with the media time of their first sample."""

    samples: np.ndarray  # float32 (n,), the mono mix the engine consumes; n % 640 == 0
    start_sample: int  # media time of samples[0], in samples at 16 kHz since stream start
    channels: np.ndarray | None = None  # float32 (C, n) per input channel, or None for mono input
    discontinuity: bool = False  # True when media time jumped: this chunk does not follow the last

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.samples)

    @property
    def start_s(self) -> float:
        return samples_to_seconds(self.start_sample)

    @property
    def end_s(self) -> float:
        return samples_to_seconds(self.end_sample)


@dataclass(frozen=True)
class Word:
    """One recognised word with its media times."""

    text: str  # the word as displayed, with its punctuation, without surrounding spaces
    start: float  # media seconds since stream start
    end: float  # media seconds since stream start
    probability: float = 1.0  # model confidence in [0, 1]


@dataclass(frozen=True)
class CaptionUpdate:
    """What one `step` (or `finish`) changed in one session's transcript.

    `committed` words are final: they are appended once and never revised. `tentative` words are
    the engine's current guess for the audio after the last committed word; each update's
    tentative list replaces the previous one entirely.
    """

    committed: tuple[Word, ...] = ()  # newly committed words, in order, never repeated later
    tentative: tuple[Word, ...] = ()  # the whole current unstable tail (may be empty)
    segment_end: bool = False  # the speaker paused or a sentence ended: close the current caption
    processed_until: float = 0.0  # media seconds of audio the engine has looked at so far


@runtime_checkable
class Engine(Protocol):
    """A streaming recogniser. One instance serves many sessions through explicit state objects."""

    spec: EngineSpec

    def open(self, options: SessionOptions) -> object:
        """Allocate a per-session state."""
        ...

    def feed(self, state: object, chunk: AudioChunk) -> None:
        """Append audio to a session. Cheap; the model work happens in `step`."""
        ...

    def step(self, states: Sequence[object]) -> list[CaptionUpdate]:
        """Advance these sessions together (batched where the engine can); one update each."""
        ...

    def finish(self, state: object) -> CaptionUpdate:
        """End of stream: decode what is left and commit every remaining word."""
        ...

    def close(self, state: object) -> None:
        """Free the session's state. The state must not be used afterwards."""
        ...


class EngineError(Exception):
    """An engine could not be built or could not process a session's input."""


@dataclass(frozen=True)
class EngineChoice:
    """How a server picks and builds its engine (from CLI flags)."""

    name: str = "whisper"  # "whisper" (CPU default) or "fake" (tests, protocol demos)
    model_path: str | None = None  # local weights directory; None means the bundled default
    options: dict = field(default_factory=dict)  # engine-specific knobs (threads, beam size, ...)
