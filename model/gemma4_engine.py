"""Gemma 4 unified as a live engine: media appended to each session's KV cache as it arrives, captions and
interpretations decoded while it still arrives, bounded memory, sessions batched at different positions.

What this is: the `model.api.Engine` over `model.gemma4` (docs/gemma4-engine.md gives the reasoning).
- State: per session a `StreamState` loaded from the engine's cached instruction prefix (an LRU of snapshots
  sliced to the prefix's length, bounded by count and bytes: `prefix_cache.py`), the media waiting to be
  appended, and where the open *segment* (one user turn of interleaved audio and frames) began in media time.
- Step: every waiting session appends its new media (at most `prefill_chunk_tokens` each, all sessions in one
  ragged forward, `model/gemma4_batch.py`); then the sessions the emission policy picks append a prompt suffix,
  decode greedily together, and roll back to their last media token.
- Emission policy: a tentative caption every `emit_every_s` of new audio; the segment closes on a pause
  (`pause_s` of quiet after speech), when it holds `window_s` of audio, on a media-time jump, or at the end of
  the stream. Closing commits the caption (segment_end) and finalises the interpretation. Interpretations
  (the session's instruction, kind "interpretation", when the session wants that kind) are decoded when a new
  video frame arrived, and finally at the close. A session with media still waiting (the per-step budget) reports
  `StepResult.pending`, so the scheduler steps it again without new media.
- Failure: a step is a transaction. If anything in it raises (a forward half-way through the layers, a decode),
  every session of the step is put back exactly as it was before it (caches by their undo logs, counters,
  waiting media), so the scheduler can retry them one by one.
- Memory policy: closing a segment resets the session to the cached prefix plus the last committed words
  (`carry_words`), so full-attention layers never hold more than one segment; the sliding layers are rings. KV
  bytes are flat for any stream length, and positions (RoPE) restart after the prefix every segment.

What this is not: a tokenizer-free engine (a checkpoint directory ships tokenizer.json), a sampler (greedy
only), or a speculative decoder: the 12B's MTP drafter would propose tokens for `_decode`'s rows to verify in one
`forward_rows` call (the extension point is `Gemma4Engine._generate`).
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from patchstream.model.api import (
    SAMPLES_PER_AUDIO_TOKEN,
    AudioChunk,
    CaptionUpdate,
    EngineChoice,
    EngineError,
    EngineSpec,
    InterpretationUpdate,
    Media,
    MediaKind,
    SessionControl,
    SessionOptions,
    StepResult,
    VideoFrame,
    Word,
    samples_to_seconds,
    seconds_to_samples,
)
from patchstream.model import gemma4_stream as gs
from patchstream.model.gemma4 import Gemma4Unified
from patchstream.model.gemma4_batch import detached_decode_step, forward_rows, generate_detached
from patchstream.model.gemma4_pieces import Piece, PieceMaker
from patchstream.model.gemma4_processing import Gemma4Processor
from patchstream.model.prefix_cache import PrefixCache

log = logging.getLogger(__name__)

AUDIO_TOKENS_PER_S = 25  # 16 kHz / 640 samples
INTERPRETATION_KIND = "interpretation"  # InterpretationUpdate.kind of the session's instruction
DTYPES = {"auto": None, "bfloat16": torch.bfloat16, "float32": torch.float32}  # `dtype` settings


@dataclass(frozen=True)
class Gemma4EngineConfig:
    """Knobs of the engine (from `EngineChoice.options`)."""

    window_s: float = 15.0  # most audio in one segment (375 tokens): the 12B loses track past ~450-500 tokens
    emit_every_s: float = 1.0  # new audio between two tentative captions
    pause_s: float = 0.6  # quiet after speech that closes a segment
    silence_rms: float = 0.01  # a 40 ms frame quieter than this counts as quiet
    caption_tokens: int = 32  # most tokens one caption decode generates
    interpretation_tokens: int = 48  # most tokens one interpretation decode generates
    instruction_tokens: int = 128  # an instruction is cut to this many tokens (it lives in the rolled-back suffix)
    carry_words: int = 12  # committed words carried into the next segment
    caption_instruction: str = "Transcribe the speech."
    default_instruction: str = ""  # interpretation instruction of sessions that send none ("" = none)
    video_fps: float = 1.0  # frames per media second appended (each ~80 tokens at the 70-patch budget)
    frame_soft_tokens: int = 70  # patch budget per frame
    max_batch: int = 8  # sessions per step
    max_pending_s: float = 30.0  # audio waiting to be appended; beyond it the oldest is dropped (engine behind)
    prefill_chunk_tokens: int = 256  # most media tokens one session appends per step: long backlogs never stall others
    prefix_cache_entries: int = 8  # instruction prefixes kept (one per distinct bias prompt), least recently used go
    prefix_cache_mib: float = 256.0  # and at most this much KV in them (12B bf16: ~0.33 MiB per prefix token)
    device: str = "auto"  # "auto": cuda when available, else cpu ("cpu", "cuda", "cuda:1", ...)
    dtype: str = "auto"  # "auto": bfloat16 on cuda, float32 on cpu; or "bfloat16" / "float32"
    compile_decode: str = "auto"  # "auto": torch.compile (CUDA graphs) the decode step on cuda only; "on" / "off"

    def __post_init__(self) -> None:
        positive = ("window_s", "emit_every_s", "pause_s", "caption_tokens", "interpretation_tokens",
                    "instruction_tokens", "video_fps", "max_batch", "max_pending_s", "prefill_chunk_tokens")
        bad = [name for name in positive if not getattr(self, name) > 0]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be above 0")
        if self.window_tokens < 1:
            raise ValueError("window_s must hold at least one 40 ms audio token")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {self.dtype!r}")
        if self.compile_decode not in ("auto", "on", "off"):
            raise ValueError(f"compile_decode must be auto, on or off, not {self.compile_decode!r}")
        if self.carry_words < 0 or self.prefix_cache_entries < 0 or self.prefix_cache_mib < 0:
            raise ValueError("carry_words and the prefix cache bounds must be >= 0")

    @property
    def window_tokens(self) -> int:
        return int(self.window_s * AUDIO_TOKENS_PER_S)

    @property
    def segment_tokens(self) -> int:
        """Most tokens of one segment: its audio window, the frames shown meanwhile, their labels."""
        frames = int(self.window_s * self.video_fps) + 1
        return self.window_tokens + frames * (self.frame_soft_tokens + 16) + 4

    @property
    def rollback_slack(self) -> int:
        """Tokens a decode appends before rolling back: the longest suffix plus its answer."""
        return 32 + self.instruction_tokens + max(self.caption_tokens, self.interpretation_tokens)


@dataclass
class Gemma4Session:
    """One session: its decoder state, waiting media and the open segment."""

    prompt: str  # bias words in the prefix
    instruction: str  # interpretation instruction ("" = none)
    stream: gs.StreamState | None  # the decoder caches; None once closed
    interpret: bool = True  # the session wants INTERPRETATION_KIND (`interpretations` of start / control)
    open_interpretation: InterpretationUpdate | None = None  # the last partial sent in this segment, if any
    retire: bool = False  # the open partial's instruction changed or its kind was turned off: finalise it as it is
    interpretation_index: int = 0  # counts final interpretations: ids
    pending: deque = field(default_factory=deque)  # Media not yet appended, in media-time order (`max_pending_s`)
    carry: str = ""  # committed words of the last segment, appended before the next one's media
    carry_pending: bool = False  # the carry text still has to be appended
    audio_open: bool = False  # an `<|audio>` segment is open (the next audio continues it)
    processed_sample: int = 0  # media time up to which audio is in the context
    segment_start_sample: int = 0  # media time of the open segment's first audio
    segment_audio: int = 0  # audio tokens in the open segment
    segment_tokens: int = 0  # all tokens appended since the segment opened
    audio_since_emit: int = 0  # audio tokens since the last caption decode
    quiet_run: int = 0  # trailing quiet audio tokens
    heard: bool = False  # the open segment holds speech
    new_frame: bool = False  # a frame was appended since the last interpretation
    segment_frames: list[float] = field(default_factory=list)  # media seconds of the open segment's frames
    must_close: bool = False  # the policy closes the segment at this step's emission
    committed_until: float = 0.0  # media seconds of the last committed word's end
    caption_decodes: int = 0  # caption decodes so far, empty ones included (the benchmark's latency clock)


class Gemma4Engine:
    """The live Gemma 4 unified engine (see the module docstring)."""

    def __init__(self, model: Gemma4Unified, processor: Gemma4Processor, config: Gemma4EngineConfig):
        self.model = model
        self.config = config
        self.pieces = PieceMaker(model, processor.tokenizer, config.frame_soft_tokens)
        self.tokenizer = processor.tokenizer
        # prompt -> the prefix's snapshot, sliced to its length; clients choose prompts, so it is bounded.
        self._prefixes = PrefixCache(config.prefix_cache_entries, int(config.prefix_cache_mib * 2**20))
        self._decode_step = _decode_step(config.compile_decode, model.decoder.embed_tokens.weight.device)
        self.spec = EngineSpec(
            name=f"gemma4 ({model.config.text.num_hidden_layers} layers)",
            media=frozenset({MediaKind.AUDIO, MediaKind.VIDEO}),
            video_fps=config.video_fps,
            frame_soft_tokens=config.frame_soft_tokens,  # the server resizes frames to this budget
            interpretations=frozenset({INTERPRETATION_KIND}),
            max_batch=config.max_batch,
            min_step_samples=SAMPLES_PER_AUDIO_TOKEN * max(1, int(config.emit_every_s * AUDIO_TOKENS_PER_S) // 5),
        )

    # --- contract --------------------------------------------------------------------------------

    def open(self, options: SessionOptions) -> Gemma4Session:
        if options.task != "transcribe":
            raise EngineError(f"the gemma4 engine transcribes; task {options.task!r} is not supported")
        interpret = self._wants(options.interpretations, True)
        instruction = self._cut(options.instruction or self.config.default_instruction)
        session = Gemma4Session(prompt=options.prompt, instruction=instruction, stream=None, interpret=interpret)
        prefix = self._prefix(session.prompt)
        session.stream = self._new_stream(prefix.position)
        gs.load_snapshot(session.stream, prefix)
        return session

    def control(self, state: Gemma4Session, control: SessionControl) -> None:
        """A new instruction or kind set is effective at the next decode (it lives in the suffix); a partial already
        sent under the old one is finalised as it is. A new prompt takes effect with the next segment's prefix."""
        interpret = self._wants(control.interpretations, state.interpret)  # checked before anything changes
        instruction = state.instruction if control.instruction is None else self._cut(control.instruction)
        if interpret != state.interpret or instruction != state.instruction:
            state.retire = state.open_interpretation is not None
        state.interpret, state.instruction = interpret, instruction
        if control.prompt is not None:
            state.prompt = control.prompt

    def feed(self, state: Gemma4Session, media: Media) -> None:
        """Queue media; beyond `max_pending_s` of audio the oldest media go, and the audio after the hole is
        flagged as a discontinuity (the segment closes there, never stitched across it)."""
        state.pending.append(media)
        limit = seconds_to_samples(self.config.max_pending_s)
        while _pending_samples(state.pending) > limit and len(state.pending) > 1:
            state.pending.popleft()
            # The first audio after the hole is flagged, even behind a frame at the head.
            first_audio = next((i for i, item in enumerate(state.pending) if isinstance(item, AudioChunk)), None)
            if first_audio is not None:
                chunk = state.pending[first_audio]
                state.pending[first_audio] = AudioChunk(chunk.samples, chunk.start_sample, discontinuity=True)

    def step(self, states: Sequence[Gemma4Session]) -> list[StepResult]:
        states = list(states)
        return self._transaction(states, lambda: self._advance(states, finishing=False))

    def finish(self, state: Gemma4Session) -> StepResult:
        def run() -> StepResult:
            results = []
            while state.pending:
                results.append(self._advance([state], finishing=False)[0])
            results.append(self._advance([state], finishing=True)[0])
            return _merge(results)

        return self._transaction([state], run)

    def close(self, state: Gemma4Session) -> None:
        state.stream = None  # the caches' only reference: freed here
        state.pending.clear()

    # --- failure: a step is a transaction --------------------------------------------------------

    def _transaction(self, states: list[Gemma4Session], work):
        """Run `work`; if it raises, put every session back exactly as it was (caches, counters, waiting media)."""
        saved = [_session_copy(s) for s in states]
        for s in states:
            gs.begin(s.stream)
        try:
            out = work()
        except BaseException:
            for s, before in zip(states, saved):
                gs.undo(s.stream)
                vars(s).update(vars(before))
            raise
        for s in states:
            gs.end(s.stream)
        return out

    # --- prefix and memory policy ----------------------------------------------------------------

    def _wants(self, kinds: frozenset[str] | None, current: bool) -> bool:
        """Whether a session with these `interpretations` interprets (None: leave `current` as it is)."""
        if kinds is None:
            return current
        unknown = set(kinds) - self.spec.interpretations
        if unknown:
            raise EngineError(f"the gemma4 engine offers no {', '.join(sorted(unknown))} interpretations; "
                              f"it offers: {', '.join(sorted(self.spec.interpretations))}")
        return INTERPRETATION_KIND in kinds

    def _cut(self, instruction: str) -> str:
        ids = self.tokenizer.encode(instruction)
        return instruction if len(ids) <= self.config.instruction_tokens else self.tokenizer.decode(
            ids[: self.config.instruction_tokens])

    def _new_stream(self, prefix_tokens: int) -> gs.StreamState:
        """Caches sized for the prefix, the carry and one segment with its rollback slack (they never grow)."""
        bound = prefix_tokens + 64 + self.config.segment_tokens + self.config.rollback_slack
        return gs.new_state(self.model, rollback_slack=self.config.rollback_slack,
                            full_capacity=1 << (bound - 1).bit_length())

    def _prefix(self, prompt: str) -> gs.StateSnapshot:
        """The instruction prefix for `prompt`: computed on a miss, then kept as stored entries only."""
        snap = self._prefixes.get(prompt)
        if snap is None:
            piece = self.pieces.prefix(self.config.caption_instruction, prompt)
            n = piece.embeds.shape[0]
            state = gs.new_state(self.model, rollback_slack=self.config.rollback_slack, full_capacity=n)
            forward_rows(self.model, [state], [piece.embeds], [None])
            snap = gs.snapshot(state)  # the ring keeps at most its capacity of a very long prompt
            self._prefixes.put(prompt, snap)
        return snap

    def _reset_segment(self, s: Gemma4Session, committed: tuple[Word, ...]) -> None:
        """Close the segment: back to the prefix, carrying the last committed words (the memory policy). The
        session's own caches are reloaded in place: no copy of a whole state, no new allocation."""
        words = (s.carry.split() + [w.text for w in committed])
        words = words[max(0, len(words) - self.config.carry_words):] if self.config.carry_words else []
        s.carry, s.carry_pending = " ".join(words), bool(words)
        gs.load_snapshot(s.stream, self._prefix(s.prompt))
        s.audio_open, s.heard, s.new_frame, s.must_close = False, False, False, False
        s.segment_frames = []
        s.segment_audio = s.segment_tokens = s.audio_since_emit = s.quiet_run = 0
        s.segment_start_sample = s.processed_sample

    # --- appending media -------------------------------------------------------------------------

    def _take(self, s: Gemma4Session) -> list[Piece]:
        """The pieces this step appends for `s`: bounded per step and per segment; flags a segment to close."""
        pieces: list[Piece] = []
        budget = self.config.prefill_chunk_tokens
        if s.carry_pending:
            pieces.append(self.pieces.carry(s.carry))
            s.carry_pending = False
        while s.pending and budget > 0 and not s.must_close:
            media = s.pending[0]
            if isinstance(media, AudioChunk) and media.discontinuity:
                if s.segment_tokens:  # never stitch a segment across a hole in media time
                    s.must_close = True
                    break
                s.pending[0] = AudioChunk(media.samples, media.start_sample)
                s.processed_sample = s.segment_start_sample = media.start_sample
                continue
            room = self.config.segment_tokens - s.segment_tokens
            # A frame is one block: it may overrun the step's budget by itself (bounded by its patch budget).
            if isinstance(media, AudioChunk):
                piece = self._audio_piece(s, min(budget, room))
            else:
                piece = self._frame_piece(s, room)
            if piece is None and not s.segment_tokens:  # cannot fit even an empty segment: drop it, never loop
                s.pending.popleft()
                continue
            if piece is None:
                s.must_close = True
                break
            pieces.append(piece)
            budget -= piece.embeds.shape[0]
        return pieces

    def _audio_piece(self, s: Gemma4Session, room: int) -> Piece | None:
        chunk = s.pending[0]
        n = min(len(chunk.samples) // SAMPLES_PER_AUDIO_TOKEN, room - 1, self.config.window_tokens - s.segment_audio)
        if n <= 0:
            return None
        cut = n * SAMPLES_PER_AUDIO_TOKEN
        if cut < len(chunk.samples):
            s.pending[0] = AudioChunk(chunk.samples[cut:], chunk.start_sample + cut)
        else:
            s.pending.popleft()
        if not s.segment_tokens:
            s.segment_start_sample = chunk.start_sample
        piece = self.pieces.audio(np.asarray(chunk.samples[:cut], np.float32), open_segment=not s.audio_open)
        self._listen(s, chunk.samples[:cut])
        s.audio_open = True
        s.processed_sample = chunk.start_sample + cut
        s.segment_audio += n
        s.audio_since_emit += n
        s.segment_tokens += piece.embeds.shape[0]
        return piece

    def _listen(self, s: Gemma4Session, samples: np.ndarray) -> None:
        """Pause detection on 40 ms frame energy: a pause after speech closes the segment."""
        frames = samples.reshape(-1, SAMPLES_PER_AUDIO_TOKEN).astype(np.float64)
        for loud in np.sqrt((frames**2).mean(axis=1)) > self.config.silence_rms:
            s.quiet_run = 0 if loud else s.quiet_run + 1
            s.heard |= bool(loud)
        if s.heard and s.quiet_run >= self.config.pause_s * AUDIO_TOKENS_PER_S:
            s.must_close = True

    def _frame_piece(self, s: Gemma4Session, room: int) -> Piece | None:
        frame: VideoFrame = s.pending[0]
        # Fit first: the patch embedding and vision projection run only for a frame that will be appended.
        if self.pieces.frame_length(frame.pixels.shape, frame.start_s, close_audio=s.audio_open) > room:
            return None
        piece = self.pieces.frame(frame.pixels, frame.start_s, close_audio=s.audio_open)
        s.pending.popleft()
        if not s.segment_tokens:
            s.segment_start_sample = max(s.processed_sample, frame.start_sample)
        s.audio_open, s.new_frame = False, True
        s.segment_frames.append(frame.start_s)
        s.segment_tokens += piece.embeds.shape[0]
        return piece

    # --- one step ----------------------------------------------------------------------------------

    def _advance(self, states: list[Gemma4Session], finishing: bool) -> list[StepResult]:
        """Append every session's new media -- with the caption suffix where the policy decodes a caption -- in
        one ragged forward; decode the captions together; then the interpretations together."""
        taken = [self._take(s) for s in states]
        closing = [finishing or s.must_close for s in states]
        emit = self.config.emit_every_s * AUDIO_TOKENS_PER_S
        caption_rows = [i for i, s in enumerate(states)
                        if s.segment_audio and (closing[i] or s.audio_since_emit >= emit)]
        marks = {i: states[i].stream.position + sum(p.embeds.shape[0] for p in taken[i]) for i in caption_rows}
        for i in caption_rows:
            taken[i].append(self.pieces.caption_suffix(states[i].audio_open))
        rows = [i for i, pieces in enumerate(taken) if pieces]
        logits = forward_rows(self.model, [states[i].stream for i in rows],
                              [torch.cat([p.embeds for p in taken[i]]) for i in rows],
                              [_types(taken[i]) for i in rows]) if rows else None
        first = [logits[rows.index(i)] for i in caption_rows]
        captions = dict(zip(caption_rows, self._generate([states[i] for i in caption_rows], first,
                                                         [marks[i] for i in caption_rows], self.config.caption_tokens)))
        interp_rows = [i for i, s in enumerate(states)
                       if s.interpret and s.instruction and s.segment_tokens and (closing[i] or s.new_frame)]
        interps = dict(zip(interp_rows, self._interpret([states[i] for i in interp_rows])))
        return [self._result(s, captions.get(i), interps.get(i), closing[i]) for i, s in enumerate(states)]

    def _interpret(self, rows: list[Gemma4Session]) -> list[str]:
        """Append each row's interpretation suffix, decode together, roll back."""
        if not rows:
            return []
        marks = [s.stream.position for s in rows]
        suffixes = [self.pieces.interpretation_suffix(s.audio_open, s.instruction).embeds for s in rows]
        logits = forward_rows(self.model, [s.stream for s in rows], suffixes, [None] * len(rows))
        return self._generate(rows, list(logits), marks, self.config.interpretation_tokens)

    def _generate(self, rows: list[Gemma4Session], logits: list[torch.Tensor], marks: list[int],
                  limit: int) -> list[str]:
        """Greedy answers from each row's suffix logits, then back to each row's mark (its last media token)."""
        if not rows:
            return []
        streams = [s.stream for s in rows]
        try:
            tokens = generate_detached(self.model, streams, torch.stack(logits), limit, step=self._decode_step)
        except torch.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001 - a compiler failure must not take the engine down
            if self._decode_step is detached_decode_step:
                raise
            # The detached decode never touches the sessions' caches, so running it again eagerly is safe.
            log.exception("the compiled decode step failed; decoding eagerly from now on")
            self._decode_step = detached_decode_step
            tokens = generate_detached(self.model, streams, torch.stack(logits), limit, step=self._decode_step)
        for stream, mark in zip(streams, marks):
            gs.rollback(stream, mark)
        return [self.tokenizer.decode(t).strip() for t in tokens]

    def _result(self, s: Gemma4Session, caption: str | None, interp: str | None, closing: bool) -> StepResult:
        processed = samples_to_seconds(s.processed_sample)
        interpretations = self._interpretations(s, interp, closing, processed)
        words = self._words(s, caption) if caption is not None else ()
        if caption is not None:
            s.audio_since_emit = 0
            s.caption_decodes += 1
        pending = bool(s.pending)  # media the step budget left waiting: step again without new media
        if not closing:
            return StepResult(CaptionUpdate(tentative=words, processed_until=processed), interpretations,
                              pending=pending)
        if words:
            s.committed_until = words[-1].end
        if s.segment_tokens:
            self._reset_segment(s, words)
        s.must_close = False
        return StepResult(CaptionUpdate(committed=words, segment_end=bool(words), processed_until=processed),
                          interpretations, pending=pending)

    def _interpretations(self, s: Gemma4Session, text: str | None, closing: bool,
                         processed: float) -> tuple[InterpretationUpdate, ...]:
        """This step's interpretation updates: a partial retired by a control first (final, as it was sent), then
        the new decode (partial, or final at the segment's close). A partial is always followed by its final."""
        updates = []
        if s.retire or (closing and text is None and s.open_interpretation is not None):
            updates.append(replace(s.open_interpretation, final=True))
            s.open_interpretation, s.interpretation_index = None, s.interpretation_index + 1
        s.retire = False
        if text is not None:
            s.new_frame = False
            update = InterpretationUpdate(
                f"i{s.interpretation_index}", text, samples_to_seconds(s.segment_start_sample), processed,
                final=closing, kind=INTERPRETATION_KIND, frame_times=tuple(s.segment_frames))
            updates.append(update)
            s.open_interpretation = None if closing else update
            s.interpretation_index += int(closing)
        return tuple(updates)

    def _words(self, s: Gemma4Session, text: str) -> tuple[Word, ...]:
        """Decoded words spread evenly over the segment's audio (the model gives no word times)."""
        parts = text.split()
        if not parts:
            return ()
        start = max(samples_to_seconds(s.segment_start_sample), s.committed_until)
        end = max(samples_to_seconds(s.processed_sample), start)
        step = (end - start) / len(parts)
        return tuple(Word(p, start + i * step, start + (i + 1) * step) for i, p in enumerate(parts))


def _decode_step(setting: str, device: torch.device):
    """The decode step, compiled with CUDA graphs ("reduce-overhead") where asked; shapes repeat per (rows, bucket)."""
    if setting == "on" or (setting == "auto" and device.type == "cuda"):
        return torch.compile(detached_decode_step, mode="reduce-overhead" if device.type == "cuda" else "default")
    return detached_decode_step


def _session_copy(s: Gemma4Session) -> Gemma4Session:
    """A copy to restore `s` from: its own containers copied (media items are immutable), the caches shared (their
    undo logs restore them)."""
    saved = copy.copy(s)
    saved.pending, saved.segment_frames = deque(s.pending), list(s.segment_frames)
    return saved


def _pending_samples(pending: deque) -> int:
    return sum(len(m.samples) for m in pending if isinstance(m, AudioChunk))


def _types(pieces: list[Piece]) -> torch.Tensor | None:
    """The row's mm types, None when it is all text."""
    if all(p.types is None for p in pieces):
        return None
    return torch.cat([p.types if p.types is not None else torch.zeros(p.embeds.shape[0], dtype=torch.long)
                      for p in pieces])


def _merge(results: list[StepResult]) -> StepResult:
    """finish's steps as one result: every committed word and interpretation, the last state of the rest."""
    last = results[-1].captions
    committed = tuple(w for r in results for w in r.captions.committed)
    return StepResult(
        CaptionUpdate(committed=committed, tentative=(), segment_end=bool(committed) or last.segment_end,
                      processed_until=last.processed_until),
        tuple(u for r in results for u in r.interpretations),
    )


def kv_bytes(state: Gemma4Session) -> int:
    """Bytes of the session's KV caches (0 once closed)."""
    return 0 if state.stream is None else sum(c.nbytes() for c in state.stream.caches)


def build(choice: EngineChoice) -> Gemma4Engine:
    """Registry entry (`model.engines`): `--model-path DIR` is a checkpoint directory; knobs from `options`."""
    if not choice.model_path or not Path(choice.model_path).is_dir():
        raise EngineError("the gemma4 engine needs --model-path DIR: a checkpoint directory with config.json, "
                          "*.safetensors and tokenizer.json (nothing downloads)")
    unknown = set(choice.options) - {f.name for f in fields(Gemma4EngineConfig)}
    if unknown:
        raise EngineError(f"unknown gemma4 engine options: {sorted(unknown)}")
    try:
        config = Gemma4EngineConfig(**choice.options)
    except (TypeError, ValueError) as error:
        raise EngineError(f"bad gemma4 engine options: {error}") from error
    if config.device != "auto":
        try:
            device = torch.device(config.device)
        except RuntimeError as error:
            raise EngineError(f"bad gemma4 engine device {config.device!r}: {error}") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError(f"device {config.device!r}: this torch sees no cuda device")
    return build_from_directory(choice.model_path, config)


def build_from_directory(path: str | Path, config: Gemma4EngineConfig) -> Gemma4Engine:
    """Load the weights (bf16 on cuda, fp32 on cpu unless `config` says otherwise) and the tokenizer."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
    dtype = DTYPES[config.dtype] or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    model = Gemma4Unified.from_pretrained(path, dtype=dtype, device=device)
    return Gemma4Engine(model, Gemma4Processor.from_pretrained(path), config)
