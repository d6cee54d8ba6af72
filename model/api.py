"""The engine interface: the only module of `model/` that `streaming/` imports.

It holds the media constants every engine agrees on, the one seconds↔samples conversion, the
frozen dataclasses that cross the server/model boundary, and the `Engine` protocol that the
Whisper CPU default, Gemma 4 unified and the tests' fake engine all implement. The contract is
timed media in (`AudioChunk | VideoFrame`, each stamped with its media time), step results out
(caption updates plus interpretation updates). It imports the standard library only (numpy only for type checking),
never torch, so the server, its tests and the clients' protocol module load it without a model.

Call pattern (the server's scheduler owns a model thread and is the only caller):

    state = engine.open(SessionOptions(...))      # per session, on the model thread
    engine.feed(state, media)                     # append an AudioChunk or VideoFrame; cheap
    engine.control(state, SessionControl(...))    # mid-session prompt/instruction change
    results = engine.step([s1, s2, ...])          # model work; sessions batched; a StepResult each
    result = engine.finish(state)                 # end of stream: flush and commit everything
    engine.close(state)                           # free the state
    shutdown_engine(engine)                       # server stopping: free engine-wide resources (optional)

The scheduler only feeds media kinds the engine's `spec.media` declares, audio in whole multiples
of `spec.samples_per_chunk`, and video at most `spec.video_fps` frames per second (latest wins).
A session whose `StepResult.pending` is True is stepped again even when no new media arrives.

Engines are not thread-safe: all calls for all sessions happen on one thread at a time. None of
these calls may wait on work of its own running elsewhere (an OCR worker): the model thread is
every session's. A batched `step` in which only some sessions failed raises `PartialStepError`
with the others' results, so they are not lost; any other exception fails the whole batch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # arrays cross the boundary, but this module never computes with them
    import numpy as np

SAMPLE_RATE = 16_000  # Hz; every engine consumes 16 kHz mono float32 audio
SAMPLES_PER_AUDIO_TOKEN = 640  # 40 ms: one Gemma 4 unified audio soft token, our chunk unit
PATCH_PX = 48  # side of one raw image patch fed to Gemma 4 unified, in pixels
# A word ending so ends a sentence: the stabiliser closes a segment, the caption policy a caption.
SENTENCE_END = (".", "?", "!", "…")


class MediaKind(enum.StrEnum):
    """A kind of timed media an engine may take."""

    AUDIO = "audio"  # AudioChunk
    VIDEO = "video"  # VideoFrame


def samples_to_seconds(samples: int, sample_rate: int = SAMPLE_RATE) -> float:
    """The one conversion from a sample index to media seconds."""
    return samples / sample_rate


def seconds_to_samples(seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    """The one conversion from media seconds to a sample count or index (rounded to nearest)."""
    return int(round(seconds * sample_rate))


@dataclass(frozen=True)
class EngineSpec:
    """What an engine wants from the server."""

    name: str  # human-readable engine name (and model), reported to clients in `ready`
    media: frozenset[MediaKind] = frozenset({MediaKind.AUDIO})  # what `feed` accepts; nothing else is fed
    sample_rate: int = SAMPLE_RATE  # Hz of the audio passed to `feed` (the only rate chunks have)
    samples_per_chunk: int = SAMPLES_PER_AUDIO_TOKEN  # audio chunks are whole multiples of this
    video_fps: float = 0.0  # most video frames per media second it wants (0 without VIDEO)
    max_batch: int = 1  # how many sessions one `step` call can advance together
    min_step_samples: int = 0  # new audio a session needs before another `step` is useful
    frame_soft_tokens: int = 70  # Gemma 4 soft-token budget each video frame is resized to (48 px patches)
    interpretations: frozenset[str] = frozenset()  # interpretation kinds it can emit ("text", "scene", ...)

    def __post_init__(self) -> None:
        if (MediaKind.VIDEO in self.media) != (self.video_fps > 0):
            raise ValueError("an engine that takes video states its frame rate, and only then")
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError(f"engines consume {SAMPLE_RATE} Hz audio; the chunker makes no other rate")


@dataclass(frozen=True)
class SessionOptions:
    """Per-session choices a client makes in its `start` message."""

    language: str = "en"  # BCP-47-ish language code of the speech
    task: str = "transcribe"  # "transcribe" for captions
    prompt: str = ""  # domain words or context that bias recognition
    instruction: str = ""  # what to interpret beside captions ("describe the scene"); "" = none
    interpretations: frozenset[str] | None = None  # kinds wanted; None = every kind the engine offers


@dataclass(frozen=True)
class SessionControl:
    """A mid-session change of what the engine is told; None leaves a field as it is."""

    prompt: str | None = None  # new bias words, replacing the old ones
    instruction: str | None = None  # new interpretation instruction ("" stops interpreting)
    interpretations: frozenset[str] | None = None  # new set of kinds wanted (empty: none)

    def then(self, newer: "SessionControl") -> "SessionControl":
        """This change followed by `newer`: the fields `newer` sets win, the rest stay."""
        changes = {f.name: getattr(newer, f.name) for f in fields(newer) if getattr(newer, f.name) is not None}
        return replace(self, **changes)


@dataclass(frozen=True)
class AudioChunk:
    """Whole 40 ms frames of 16 kHz audio with the media time of their first sample."""

    samples: np.ndarray  # float32 (n,), the mono mix the engine consumes; n % 640 == 0
    start_sample: int  # media time of samples[0], in samples at 16 kHz since stream start
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
class VideoFrame:
    """One whole video frame with its media time (on the audio clock: 16 kHz samples)."""

    pixels: np.ndarray  # uint8 (H, W, 3) RGB; from the server: H, W multiples of PATCH_PX, within the budget
    start_sample: int  # media time the frame is shown, in samples at 16 kHz since stream start
    positions: np.ndarray | None = None  # int64 (H/48 * W/48, 2): (x, y) of each 48 px patch, row-major
    source_size: tuple[int, int] | None = None  # (height, width) before the resize; None = not resized

    @property
    def start_s(self) -> float:
        return samples_to_seconds(self.start_sample)


Media = AudioChunk | VideoFrame


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


@dataclass(frozen=True)
class InterpretationUpdate:
    """The current text of one interpretation (a description, translation, answer, ...).

    A partial update replaces the previous one with the same id; a final one never changes again.
    """

    interpretation_id: str  # unique within the session, stable from first partial to final
    text: str  # the whole interpretation as it reads now
    start: float  # media seconds of the first media it covers
    end: float  # media seconds of the last media it covers
    final: bool  # True: closed, never revised
    kind: str  # what was asked for, e.g. "description"; engines name their kinds
    frame_times: tuple[float, ...] = ()  # media seconds of the video frames it was made from


@dataclass(frozen=True)
class StepResult:
    """Everything one `step` (or `finish`) produced for one session."""

    captions: CaptionUpdate = CaptionUpdate()  # transcript changes (empty for a silent step)
    interpretations: tuple[InterpretationUpdate, ...] = ()  # interpretation changes, in order
    dropped_frames: int = 0  # video frames the engine skipped since the last result (latest frame wins)
    pending: bool = False  # the engine holds work for this session: step it again even if no new media arrives

    @property
    def processed_until(self) -> float:
        """Media seconds the engine has looked at so far."""
        return self.captions.processed_until


@runtime_checkable
class Engine(Protocol):
    """A streaming recogniser. One instance serves many sessions through explicit state objects."""

    spec: EngineSpec

    def open(self, options: SessionOptions) -> object:
        """Allocate a per-session state."""
        ...

    def feed(self, state: object, media: Media) -> None:
        """Append timed media of a kind `spec.media` declares. Cheap; model work happens in `step`."""
        ...

    def control(self, state: object, control: SessionControl) -> None:
        """Change a session's prompt or instruction from its next step on (EngineError if unsupported)."""
        ...

    def step(self, states: Sequence[object]) -> list[StepResult]:
        """Advance these sessions together (batched where the engine can); one result each."""
        ...

    def finish(self, state: object) -> StepResult:
        """End of stream: decode what is left and commit every remaining word."""
        ...

    def close(self, state: object) -> None:
        """Free the session's state. The state must not be used afterwards."""
        ...


class EngineError(Exception):
    """An engine could not be built or could not process a session's input."""


class PartialStepError(EngineError):
    """A batched `step` where some sessions failed alone: `results[i]` is session i's `StepResult`,
    or the exception that failed that session only. The scheduler fails just those sessions."""

    def __init__(self, results: Sequence[StepResult | Exception]):
        failed = [result for result in results if isinstance(result, Exception)]
        super().__init__(f"{len(failed)} of {len(results)} sessions failed: {failed[0]!r}" if failed else "no session failed")
        self.results = list(results)


def step_each(engine: Engine, states: Sequence[object]) -> list[StepResult | Exception]:
    """`engine.step(states)`, with each session's own failure in its place instead of raised: the
    one rule for a failed batch. A `PartialStepError` names who failed; after any other exception
    each session is stepped alone, so only a faulty one pays."""
    if not states:
        return []
    try:
        return list(engine.step(states))
    except PartialStepError as error:
        return error.results
    except Exception as error:  # noqa: BLE001 - reported to the sessions it concerns
        if len(states) == 1:
            return [error]
    results: list[StepResult | Exception] = []
    for state in states:
        try:
            results.append(engine.step([state])[0])
        except Exception as error:  # noqa: BLE001 - that session's alone
            results.append(error)
    return results


def shutdown_engine(engine: Engine) -> None:
    """Free what an engine holds for all sessions (worker threads, runtime sessions) once none is
    left. `shutdown()` is optional in the contract: an engine without one has nothing to free.
    The scheduler calls it when it stops, so an engine serves one server's lifetime."""
    shutdown = getattr(engine, "shutdown", None)
    if callable(shutdown):
        shutdown()


@dataclass(frozen=True)
class EngineChoice:
    """How a server picks and builds its engine (from CLI flags)."""

    name: str = "whisper"  # a name in `model.engines.ENGINES`
    model_path: str | None = None  # local weights directory or a bundled model's name ("base"); None = the default
    options: dict = field(default_factory=dict)  # engine-specific knobs (threads, beam size, ...)
    vision: tuple[str, ...] = ()  # interpretation engines composed beside it ("ocr", "scenes"); () = none


# --- text models of agent assist (built by `model.engines.build_text_models`) --------------------


@runtime_checkable
class TextEmbedder(Protocol):
    """Sentence embeddings for intent matching and summaries. Thread-safe: read-only after load."""

    name: str

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        """(N, D) float32, each row unit length (all zeros for a text with no known token)."""
        ...


@runtime_checkable
class SentimentScorer(Protocol):
    """Polarity of one utterance. Thread-safe."""

    name: str

    def polarity(self, text: str) -> float:
        """From -1 (most negative) through 0 (neutral) to 1 (most positive)."""
        ...


@dataclass(frozen=True)
class TextModels:
    """The CPU text models a server offers agent assist; None where the `assist` extra is missing."""

    embedder: TextEmbedder | None = None  # intents and summaries
    sentiment: SentimentScorer | None = None  # per-utterance sentiment
    missing: str = ""  # why a model is None, for the `bad_start` that asks for it
