"""Gemma 4 unified as a live engine: media appended to each session's KV cache as it arrives, captions and
interpretations decoded while it still arrives, bounded memory, sessions batched at different positions.

What this is: the `model.api.Engine` over `model.gemma4` (docs/gemma4-engine.md gives the reasoning).
- State: per session a `StreamState` cloned from the engine's cached instruction prefix, the media waiting to be
  appended, and where the open *segment* (one user turn of interleaved audio and frames) began in media time.
- Step: every waiting session appends its new media (at most `prefill_chunk_tokens` each, all sessions in one
  ragged forward, `model/gemma4_batch.py`); then the sessions the emission policy picks append a prompt suffix,
  decode greedily together, and roll back to their last media token.
- Emission policy: a tentative caption every `emit_every_s` of new audio; the segment closes on a pause
  (`pause_s` of quiet after speech), when it holds `window_s` of audio, on a media-time jump, or at the end of
  the stream. Closing commits the caption (segment_end) and finalises the interpretation. Interpretations
  (the session's instruction) are decoded when a new video frame arrived, and finally at the close.
- Memory policy: closing a segment resets the session to the cached prefix plus the last committed words
  (`carry_words`), so full-attention layers never hold more than one segment; the sliding layers are rings. KV
  bytes are flat for any stream length, and positions (RoPE) restart after the prefix every segment.

What this is not: a tokenizer-free engine (a checkpoint directory ships tokenizer.json), a sampler (greedy
only), or a speculative decoder: the 12B's MTP drafter would propose tokens for `_decode`'s rows to verify in one
`forward_rows` call (the extension point is `Gemma4Engine._generate`).
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field, fields
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

AUDIO_TOKENS_PER_S = 25  # 16 kHz / 640 samples
PREFIX_CACHE_SIZE = 8  # instruction prefixes kept (one per distinct bias prompt)
INTERPRETATION_KIND = "interpretation"  # InterpretationUpdate.kind of the session's instruction


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
    device: str = "auto"  # "auto": cuda when available, else cpu
    dtype: str = "auto"  # "auto": bfloat16 on cuda, float32 on cpu
    compile_decode: str = "auto"  # "auto": torch.compile (CUDA graphs) the decode step on cuda only; "on" / "off"

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
    pending: deque = field(default_factory=deque)  # Media not yet appended, in media-time order (`max_pending_s`)
    carry: str = ""  # committed words of the last segment, appended before the next one's media
    carry_pending: bool = False  # the carry text still has to be appended
    audio_open: bool = False  # an `<|audio>` segment is open (the next audio continues it)
    processed_sample: int = 0  # media time up to which audio is in the context
    segment_start_sample: int = 0  # media time of the open segment's first audio
    segment_index: int = 0  # counts closed segments: interpretation ids
    segment_audio: int = 0  # audio tokens in the open segment
    segment_tokens: int = 0  # all tokens appended since the segment opened
    audio_since_emit: int = 0  # audio tokens since the last caption decode
    quiet_run: int = 0  # trailing quiet audio tokens
    heard: bool = False  # the open segment holds speech
    new_frame: bool = False  # a frame was appended since the last interpretation
    segment_frames: list[float] = field(default_factory=list)  # media seconds of the open segment's frames
    must_close: bool = False  # the policy closes the segment at this step's emission
    committed_until: float = 0.0  # media seconds of the last committed word's end


class Gemma4Engine:
    """The live Gemma 4 unified engine (see the module docstring)."""

    def __init__(self, model: Gemma4Unified, processor: Gemma4Processor, config: Gemma4EngineConfig):
        self.model = model
        self.config = config
        self.pieces = PieceMaker(model, processor.tokenizer, config.frame_soft_tokens)
        self.tokenizer = processor.tokenizer
        self._prefixes: dict[str, gs.StreamState] = {}  # prompt -> prefix state (cloned per segment)
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
        instruction = self._cut(options.instruction or self.config.default_instruction)
        session = Gemma4Session(prompt=options.prompt, instruction=instruction, stream=None)
        session.stream = self._prefix_state(session.prompt)
        return session

    def control(self, state: Gemma4Session, control: SessionControl) -> None:
        if control.instruction is not None:
            state.instruction = self._cut(control.instruction)  # the suffix: effective at the next decode
        if control.prompt is not None:
            state.prompt = control.prompt  # the prefix: effective from the next segment

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
        return self._advance(list(states), finishing=False)

    def finish(self, state: Gemma4Session) -> StepResult:
        results = []
        while state.pending:
            results.append(self._advance([state], finishing=False)[0])
        results.append(self._advance([state], finishing=True)[0])
        return _merge(results)

    def close(self, state: Gemma4Session) -> None:
        state.stream = None  # the caches' only reference: freed here
        state.pending.clear()

    # --- prefix and memory policy ----------------------------------------------------------------

    def _cut(self, instruction: str) -> str:
        ids = self.tokenizer.encode(instruction)
        return instruction if len(ids) <= self.config.instruction_tokens else self.tokenizer.decode(
            ids[: self.config.instruction_tokens])

    def _prefix_state(self, prompt: str) -> gs.StreamState:
        """A fresh copy of the cached instruction prefix for `prompt` (computed once per prompt)."""
        if prompt not in self._prefixes:
            piece = self.pieces.prefix(self.config.caption_instruction, prompt)
            bound = piece.embeds.shape[0] + 64 + self.config.segment_tokens + self.config.rollback_slack
            state = gs.new_state(self.model, rollback_slack=self.config.rollback_slack,
                                 full_capacity=1 << (bound - 1).bit_length())  # never grows: one segment fits
            forward_rows(self.model, [state], [piece.embeds], [None])
            if len(self._prefixes) >= PREFIX_CACHE_SIZE:
                self._prefixes.pop(next(iter(self._prefixes)))
            self._prefixes[prompt] = state
        return copy.deepcopy(self._prefixes[prompt])

    def _reset_segment(self, s: Gemma4Session, committed: tuple[Word, ...]) -> None:
        """Close the segment: back to the prefix, carrying the last committed words (the memory policy)."""
        words = (s.carry.split() + [w.text for w in committed])[-self.config.carry_words:]
        s.carry, s.carry_pending = " ".join(words), bool(words)
        s.stream = self._prefix_state(s.prompt)
        s.audio_open, s.heard, s.new_frame, s.must_close = False, False, False, False
        s.segment_frames = []
        s.segment_audio = s.segment_tokens = s.audio_since_emit = s.quiet_run = 0
        s.segment_index += 1
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
        piece = self.pieces.frame(frame.pixels, frame.start_s, close_audio=s.audio_open)
        if piece.embeds.shape[0] > room:
            return None
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
                       if s.instruction and s.segment_tokens and (closing[i] or s.new_frame)]
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
        tokens = generate_detached(self.model, streams, torch.stack(logits), limit, step=self._decode_step)
        for stream, mark in zip(streams, marks):
            gs.rollback(stream, mark)
        return [self.tokenizer.decode(t).strip() for t in tokens]

    def _result(self, s: Gemma4Session, caption: str | None, interp: str | None, closing: bool) -> StepResult:
        processed = samples_to_seconds(s.processed_sample)
        interpretations = ()
        if interp is not None:
            s.new_frame = False
            start = samples_to_seconds(s.segment_start_sample)
            interpretations = (InterpretationUpdate(f"i{s.segment_index}", interp, start, processed, final=closing,
                                                    kind=INTERPRETATION_KIND, frame_times=tuple(s.segment_frames)),)
        words = self._words(s, caption) if caption is not None else ()
        if caption is not None:
            s.audio_since_emit = 0
        if not closing:
            return StepResult(CaptionUpdate(tentative=words, processed_until=processed), interpretations)
        if words:
            s.committed_until = words[-1].end
        if s.segment_tokens:
            self._reset_segment(s, words)
        s.must_close = False
        return StepResult(CaptionUpdate(committed=words, segment_end=bool(words), processed_until=processed),
                          interpretations)

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
    return build_from_directory(choice.model_path, Gemma4EngineConfig(**choice.options))


def build_from_directory(path: str | Path, config: Gemma4EngineConfig) -> Gemma4Engine:
    """Load the weights (bf16 on cuda, fp32 on cpu unless `config` says otherwise) and the tokenizer."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
    dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
             "bfloat16": torch.bfloat16, "float32": torch.float32}[config.dtype]
    model = Gemma4Unified.from_pretrained(path, dtype=dtype, device=device)
    return Gemma4Engine(model, Gemma4Processor.from_pretrained(path), config)
