"""Audio chunking: timed 16 kHz audio of any length -> whole 40 ms frames with media timestamps.

`AudioChunker` is sans-I/O: `push` takes a `DecodedAudio` (from `decode.py`) and returns
`AudioChunk`s (from `model/api.py`) whose lengths are whole multiples of the engine's
`spec.samples_per_chunk` (`ChunkerConfig.for_engine`), each stamped with the media time of its
first sample. It builds the mono mix the engines consume. It imports no PyAV.

Time travels with the data: the chunker keeps its own clock (where the next sample belongs) and
compares each input's media time with it. Small jitter is absorbed, overlaps are trimmed, short
gaps are filled with silence, and a jump beyond the bounds starts a new chunk at the new media
time flagged `discontinuity=True`. Packet sizes therefore never shift time: any split of the same
audio yields the same frames at the same times.

It is not a decoder (no bytes, no resampling: input is already 16 kHz), not a queue (it holds less
than one frame between calls) and not async.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patchstream.model.api import SAMPLES_PER_AUDIO_TOKEN, AudioChunk, EngineSpec, seconds_to_samples

DEFAULT_JITTER_TOLERANCE_S = 0.001  # timestamp error this small is clock noise, not a gap
DEFAULT_MAX_GAP_FILL_S = 2.0  # longer gaps are a jump: don't feed the engine seconds of silence
DEFAULT_MAX_OVERLAP_TRIM_S = 2.0  # a longer step back is a timestamp reset, not an overlap


@dataclass(frozen=True)
class DecodedAudio:
    """The chunker's input (what `decode.py` produces): 16 kHz audio with its media time."""

    samples: np.ndarray  # float32 (C, n), one row per input channel, SAMPLE_RATE Hz
    start_sample: int | None  # media time of samples[:, 0] in 16 kHz samples; None = follows the last

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[1])


@dataclass(frozen=True)
class ChunkerConfig:
    """How the chunker reconciles input timestamps with its clock (all in 16 kHz samples)."""

    jitter_tolerance_samples: int = seconds_to_samples(DEFAULT_JITTER_TOLERANCE_S)  # |error| <= this: ignore
    max_gap_fill_samples: int = seconds_to_samples(DEFAULT_MAX_GAP_FILL_S)  # gap <= this: fill with zeros
    max_overlap_trim_samples: int = seconds_to_samples(DEFAULT_MAX_OVERLAP_TRIM_S)  # overlap <= this: trim
    frame_samples: int = SAMPLES_PER_AUDIO_TOKEN  # chunks are whole multiples of this (40 ms)
    max_chunk_frames: int = 25  # longest chunk emitted: 25 frames = 1 s; longer input is split

    def __post_init__(self) -> None:
        if self.frame_samples <= 0 or min(self.jitter_tolerance_samples, self.max_overlap_trim_samples) < 0:
            raise ValueError(f"invalid chunker config: {self}")
        # A jump pads the old tail to a whole frame; the padding must fit in the gap it closes.
        if self.max_gap_fill_samples < self.frame_samples:
            raise ValueError("max_gap_fill_samples must be at least one frame")

    @classmethod
    def for_engine(cls, spec: EngineSpec) -> ChunkerConfig:
        """Chunks the way this engine takes them: whole multiples of its chunk size."""
        return cls(frame_samples=spec.samples_per_chunk)


@dataclass(frozen=True)
class ChunkerStats:
    """Counters since the chunker was made: what it did to the timeline (tests and debugging read them)."""

    samples_received: int  # per channel, as pushed (before trimming)
    samples_emitted: int  # per channel, in chunks (gap fill and flush padding included)
    gap_filled_samples: int  # silence inserted for gaps, discontinuity padding and flush padding
    trimmed_samples: int  # input dropped because it overlapped audio already placed
    jitter_events: int  # inputs whose timestamp error was absorbed
    discontinuities: int  # chunks flagged discontinuity=True


class AudioChunker:
    """One session's chunker. Not thread-safe; the session calls it from one place."""

    def __init__(self, config: ChunkerConfig = ChunkerConfig()) -> None:
        self.config = config
        self._channels: int | None = None  # fixed by the first push
        # Samples not yet emitted, (C, m). Bounded: after every call m < frame_samples; it only
        # grows inside a call, by at most that call's input plus max_gap_fill_samples.
        self._pending = np.zeros((0, 0), np.float32)
        self._pending_start = 0  # media time of _pending[:, 0]
        self._started = False
        self._discontinuity = False  # the next chunk emitted starts after a jump
        self._received = self._emitted = self._gap_filled = self._trimmed = 0
        self._jitter_events = self._discontinuities = 0

    @property
    def next_sample(self) -> int:
        """Media time where the next input sample is expected."""
        return self._pending_start + self._pending.shape[1]

    @property
    def stats(self) -> ChunkerStats:
        return ChunkerStats(
            samples_received=self._received,
            samples_emitted=self._emitted,
            gap_filled_samples=self._gap_filled,
            trimmed_samples=self._trimmed,
            jitter_events=self._jitter_events,
            discontinuities=self._discontinuities,
        )

    def push(self, audio: DecodedAudio) -> list[AudioChunk]:
        """Place `audio` on the media timeline; return every whole frame now available.

        Usually one chunk; two when the input jumps (the frames before the jump, then the new
        start flagged as a discontinuity).
        """
        samples = np.asarray(audio.samples, dtype=np.float32)
        if samples.ndim != 2:
            raise ValueError(f"DecodedAudio.samples must be (C, n), got shape {samples.shape}")
        self._received += samples.shape[1]
        if not self._started:
            self._start(samples.shape[0], 0 if audio.start_sample is None else audio.start_sample)
        elif samples.shape[0] != self._channels:
            raise ValueError(f"channel count changed from {self._channels} to {samples.shape[0]}")

        out: list[AudioChunk] = []
        start = self.next_sample if audio.start_sample is None else audio.start_sample
        error = start - self.next_sample  # > 0: gap, < 0: overlap
        if abs(error) <= self.config.jitter_tolerance_samples:
            self._jitter_events += error != 0  # placed right after the last sample: time is ours
        elif 0 < error <= self.config.max_gap_fill_samples:
            self._append(np.zeros((self._channels, error), np.float32))
            self._gap_filled += error
        elif 0 > error >= -self.config.max_overlap_trim_samples:
            cut = min(-error, samples.shape[1])  # what lies before our clock was already placed
            samples = samples[:, cut:]
            self._trimmed += cut
        else:
            # A jump (long gap or timestamp reset): close what we have, restart the clock there.
            out += self._take(pad=True)
            self._pending_start = start
            self._discontinuity = True
        self._append(samples)
        out += self._take(pad=False)
        return out

    def flush(self) -> list[AudioChunk]:
        """End of stream: pad the tail with zeros to a whole frame and return it."""
        return self._take(pad=True)

    def _start(self, channels: int, start_sample: int) -> None:
        self._started = True
        self._channels = channels
        self._pending = np.zeros((channels, 0), np.float32)
        self._pending_start = start_sample

    def _append(self, samples: np.ndarray) -> None:
        if samples.shape[1]:
            self._pending = np.concatenate([self._pending, samples], axis=1)

    def _take(self, pad: bool) -> list[AudioChunk]:
        """Emit the whole frames of `_pending` (with pad=True, the partial last frame too)."""
        frame = self.config.frame_samples
        have = self._pending.shape[1]
        if pad and have % frame:
            padding = frame - have % frame
            self._append(np.zeros((self._channels, padding), np.float32))
            self._gap_filled += padding
            have += padding
        whole = have - have % frame
        chunks = []
        # Chunks are capped so one huge client frame never becomes one huge engine input: the
        # scheduler's backlog bound drops whole chunks, and the engine's buffers are sized in seconds.
        longest = frame * max(1, self.config.max_chunk_frames)
        for offset in range(0, whole, longest):
            piece = self._pending[:, offset : min(whole, offset + longest)]
            chunks.append(
                AudioChunk(
                    samples=np.ascontiguousarray(piece.mean(axis=0, dtype=np.float32)),  # mono mix
                    start_sample=self._pending_start + offset,
                    discontinuity=self._discontinuity and offset == 0,
                )
            )
        if not chunks:
            return []
        self._pending = np.ascontiguousarray(self._pending[:, whole:])  # < one frame: bounded
        self._pending_start += whole
        self._emitted += whole
        self._discontinuities += self._discontinuity
        self._discontinuity = False
        return chunks
