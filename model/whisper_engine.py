"""The CPU default engine: streaming captions from faster-whisper over a bundled Whisper.

It is: an implementation of `model.api.Engine` that keeps, per session, a bounded buffer of the
audio not yet committed plus a few seconds of committed audio before it, gates it with the Silero
VAD that faster-whisper ships (`model.vad`, its recurrent state carried per session), and on every
`step` re-decodes the buffers of several sessions in one CTranslate2 batch (encoder, greedy
generate, word alignment). The committed words inside the buffer are forced as the decoder's
prefix, so the decoder continues a transcript it already has, with the audio it came from, as it
would mid-way through a whole-file pass; older committed text is the prompt. The encoder sees a
short window (the audio followed by silence, at most `window_s`) instead of Whisper's 30 s, which
is what makes a step cheap enough to run several times a second on two cores.

A committed word is tied to the audio it came from: decoded words the aligner found no audio for
(a sentence said again into the silence, a loop) are dropped before anything commits
(`model.repetition`), `model.stabilizer` commits words append-only onto one forward timeline that
starts where the committed audio ends, and words centred on audio already committed are never
committed again. The buffer is cut at committed word boundaries, so cost stays flat however long
a stream runs.

It is not: a model implementation (CTranslate2 runs Whisper) or thread-safe (the server calls it
from one model thread). English-only checkpoints (tiny.en, the default) take English sessions;
multilingual ones (`--model base`) take any language they know, per session. It never
downloads: the weights come from pip packages (`model.whisper_models`) or a local directory.

`transcribe_offline` decodes a whole recording with the same model, for WER baselines.
"""

from __future__ import annotations

import dataclasses
import os
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
from patchstream.model.repetition import RepetitionConfig, audio_backed
from patchstream.model.stabilizer import Stabilizer, StabilizerConfig, normalize_word
from patchstream.model.vad import VAD_WINDOW, StreamingVad, VadState  # buffer cuts are whole VAD windows

HOP = 160  # samples per log-mel frame (10 ms)
FRAMES_PER_ENCODER_STEP = 2  # the encoder halves time: one output position per 20 ms
MAX_DECODE_TOKENS = 448  # Whisper's text context, prompt included
PUNCT_BEFORE = "\"'“¿([{-"  # faster-whisper's defaults for gluing punctuation onto words
PUNCT_AFTER = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class WhisperEngineConfig:
    """Everything that tunes the engine; built from `EngineChoice.options`."""

    model_path: str | None = None  # CTranslate2 Whisper directory; None = bundled tiny.en
    compute_type: str = "int8"  # CTranslate2 quantisation on CPU
    cpu_threads: int = 0  # CTranslate2 intra-op threads; 0 = one per core (its own default, 4, oversubscribes small machines)
    window_s: float = 12.0  # encoder input: decoded audio then silence; fixed so batching is exact
    max_decode_s: float = 10.0  # most uncommitted audio one decode looks at (< window_s: keep silence)
    min_pad_s: float = 2.0  # silence after the audio in the encoder window (tells Whisper it ended)
    window_step_s: float = 2.0  # encoder windows come in these steps (4, 6, ... 12 s)
    min_step_s: float = 0.24  # new audio a session needs before another step (the latency knob)
    max_batch: int = 4  # sessions decoded together in one CTranslate2 batch
    vad_threshold: float = 0.5  # Silero speech probability that counts as speech
    pause_s: float = 0.48  # trailing non-speech that closes a phrase (commits and ends the segment)
    speech_pad_s: float = 0.2  # audio kept around VAD speech so word edges are not clipped
    trim_after_s: float = 4.0  # mid-phrase, cut committed audio only once the buffer is this long
    context_s: float = 3.0  # committed audio kept at the buffer start as run-up for the decoder
    pause_context_s: float = 3.0  # audio kept across a pause as run-up for the next phrase
    forced_prefix: bool = True  # committed words inside the buffer are forced as the decoder's
    # prefix, so run-up audio is context the decoder continues from instead of text it re-hears:
    # phrase starts then decode as in a whole-file pass (measured: WER 0.135 → 0.104, 3 voices)
    preroll_s: float = 0.32  # audio kept while silent, so a word's onset is in the next decode
    prompt_words: int = 40  # committed words kept for the decoder prompt
    prompt_tokens: int = 16  # exact prompt length once there is history (equal lengths batch together)
    beam_size: int = 1  # CTranslate2 beam width. On the real speech set greedy measured as
    # accurate as a beam of 2 (WER 0.178 vs 0.182, engine_probe) for ~15% less compute; a beam of
    # 2 had helped on eSpeak speech only
    busy_batch: int = 3  # with a beam: a batch this large means the machine is loaded, and it
    # decodes greedily, which keeps four real-time streams on two cores inside their latency
    tokens_per_second: float = 8.0  # decode budget; plain speech needs about 3-4
    no_speech_threshold: float = 0.6  # with a low log-prob, Whisper's own "nothing said" verdict
    logprob_threshold: float = -1.0  # mean token log-prob under which a decode is doubtful
    repetition: RepetitionConfig = field(default_factory=RepetitionConfig)  # text past the audio, loops
    capacity_s: float = 60.0  # per-session audio buffer; the server bounds its backlog well below
    stabilizer: StabilizerConfig = field(default_factory=StabilizerConfig)

    @classmethod
    def from_options(cls, model_path: str | None, options: dict) -> "WhisperEngineConfig":
        """Engine knobs by name; stabilizer knobs (e.g. `edge_s`) are accepted at the same level."""
        known = {k: v for k, v in options.items() if k in cls.__dataclass_fields__}
        policy = {k: v for k, v in options.items() if k in StabilizerConfig.__dataclass_fields__}
        unknown = set(options) - set(known) - set(policy)
        if unknown:
            raise EngineError(f"unknown whisper engine options: {sorted(unknown)}")
        if policy:
            known["stabilizer"] = StabilizerConfig(**policy)
        if model_path is not None:
            known["model_path"] = model_path
        return cls(**known)


@dataclass
class _Decode:
    """One session's decode request inside a batch."""

    audio: np.ndarray  # float32 (n,), the region of the buffer to decode, n <= max_decode_s
    tokenizer: object  # the session's faster-whisper Tokenizer (language tokens, word splitting)
    prompt: list[int]  # decoder prompt tokens
    max_length: int  # prompt + new-token budget
    prefix_len: int = 0  # trailing prompt tokens that are forced text (returned with the result)


@dataclass
class WhisperSession:
    """Per-session state: audio buffer, its time map, VAD decisions, commit policy."""

    options: SessionOptions
    tokenizer: object  # faster-whisper Tokenizer for the session's language (its prompt tokens)
    stabilizer: Stabilizer
    buffer: np.ndarray  # float32 (capacity,), preallocated; [0, size) holds uncommitted audio
    size: int = 0  # samples in the buffer
    # Media time of buffer samples: (buffer index, media sample) pieces, later pieces after jumps.
    anchors: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    next_media: int | None = None  # media sample the next chunk should start at, if contiguous
    vad_probs: list[float] = field(default_factory=list)  # one per VAD window from buffer start
    vad_state: VadState = field(default_factory=VadState)  # Silero's recurrent state for this stream
    committed_words: list[Word] = field(default_factory=list)  # recent finals, for the prompt
    processed_until: float = 0.0  # media seconds decoded (or judged silent) so far
    phrase_done_until: float = 0.0  # media seconds up to which a closed phrase was transcribed
    dropped_samples: int = 0  # audio lost to buffer overflow (the server should never cause it)

    def media_sample(self, index: int) -> int:
        """Media sample of buffer index `index` through the piecewise time map."""
        base_index, base_media = self.anchors[0]
        for anchor_index, anchor_media in self.anchors:
            if anchor_index > index:
                break
            base_index, base_media = anchor_index, anchor_media
        return base_media + (index - base_index)

    def piece_start(self, index: int) -> int:
        """Buffer index where the contiguous piece holding `index` begins."""
        return max([i for i, _ in self.anchors if i <= index], default=0)

    def media_seconds(self, index: int) -> float:
        return samples_to_seconds(self.media_sample(index))


class WhisperEngine:
    """Streaming Whisper over CTranslate2 with VAD gating and batched steps (see module doc)."""

    def __init__(self, config: WhisperEngineConfig = WhisperEngineConfig()) -> None:
        from faster_whisper.transcribe import get_suppressed_tokens

        self.config = config
        self.model = load_whisper_model(config.model_path, config.compute_type, config.cpu_threads)
        self.multilingual = bool(self.model.model.is_multilingual)
        self._tokenizers: dict[str, object] = {}  # Whisper language code → faster-whisper Tokenizer
        self.tokenizer = self._tokenizer("en")
        self.suppress_tokens = list(get_suppressed_tokens(self.tokenizer, [-1]))
        self.vad = StreamingVad()
        self.window_samples = _round_up(int(config.window_s * SAMPLE_RATE), HOP * FRAMES_PER_ENCODER_STEP)
        self.max_decode_samples = _round_down(int(config.max_decode_s * SAMPLE_RATE), VAD_WINDOW)
        min_step = _round_up(int(config.min_step_s * SAMPLE_RATE), SAMPLES_PER_AUDIO_TOKEN)
        model_name = os.path.basename(os.path.normpath(config.model_path)) if config.model_path else "tiny.en"
        self.spec = EngineSpec(
            name=f"whisper-{model_name}-ct2-{config.compute_type}",  # audio only: the default `media`
            max_batch=config.max_batch,
            min_step_samples=min_step,
        )
        self._warm_up()

    # ---- Engine protocol -------------------------------------------------------------------

    def open(self, options: SessionOptions) -> WhisperSession:
        language = self._language(options.language)
        if options.task != "transcribe":
            raise EngineError(f"unsupported task {options.task!r}")
        if options.instruction:
            raise EngineError("the Whisper engine transcribes; it takes no instructions")
        capacity = int(self.config.capacity_s * SAMPLE_RATE)
        return WhisperSession(
            options=options,
            tokenizer=self._tokenizer(language),
            stabilizer=Stabilizer(self.config.stabilizer),
            buffer=np.zeros(capacity, np.float32),
        )

    def control(self, state: object, control: SessionControl) -> None:
        session = _session(state)
        if control.instruction:
            raise EngineError("the Whisper engine transcribes; it takes no instructions")
        if control.prompt is not None:
            session.options = dataclasses.replace(session.options, prompt=control.prompt)

    def feed(self, state: object, chunk: AudioChunk) -> None:
        session = _session(state)
        if not isinstance(chunk, AudioChunk):  # spec.media is audio only: the server never sends video
            raise EngineError(f"the Whisper engine takes audio only, not {type(chunk).__name__}")
        samples = np.asarray(chunk.samples, np.float32)
        if chunk.discontinuity or (session.next_media is not None and chunk.start_sample != session.next_media):
            session.anchors.append((session.size, chunk.start_sample))
        elif session.next_media is None:
            session.anchors = [(session.size, chunk.start_sample)]
        session.next_media = chunk.end_sample
        overflow = session.size + len(samples) - len(session.buffer)
        if overflow > 0:
            # Drop rule: the oldest uncommitted audio goes, in whole VAD windows; the server's
            # backlog bound keeps this from happening in normal operation.
            _trim(session, _round_up(overflow, VAD_WINDOW))
            session.dropped_samples += _round_up(overflow, VAD_WINDOW)
            session.stabilizer.reset_tentative()
        session.buffer[session.size : session.size + len(samples)] = samples
        session.size += len(samples)

    def step(self, states: Sequence[object]) -> list[StepResult]:
        sessions = [_session(s) for s in states]
        updates: list[CaptionUpdate] = []
        for start in range(0, len(sessions), self.config.max_batch):
            updates += self._advance(sessions[start : start + self.config.max_batch], final=False)
        return [StepResult(update) for update in updates]

    def finish(self, state: object) -> StepResult:
        session = _session(state)
        committed: list[Word] = []
        segment_end = False
        while session.size > 0:
            before = session.size
            update = self._advance([session], final=True)[0]
            committed += update.committed
            segment_end = segment_end or update.segment_end
            if session.size >= before:  # no progress is impossible by design; never hang on it
                _trim(session, session.size)
        return StepResult(CaptionUpdate(
            committed=tuple(committed), tentative=(), segment_end=segment_end or bool(committed),
            processed_until=session.processed_until,
        ))

    def close(self, state: object) -> None:
        session = _session(state)
        session.buffer = np.zeros(0, np.float32)
        session.size = 0
        session.vad_probs = []

    # ---- one round of work for a group of sessions ---------------------------------------------

    def _advance(self, sessions: list[WhisperSession], final: bool) -> list[CaptionUpdate]:
        """VAD, choose each session's decode region, decode the batch, stabilise, trim."""
        self._update_vad(sessions)
        for session in sessions:
            self._skip_silence(session)
        plans = [self._plan(s, final) for s in sessions]
        wanted = [i for i, p in enumerate(plans) if p.region_end > 0 and p.has_speech]
        requests = [self._request(sessions[i], plans[i]) for i in wanted]
        results = dict(zip(wanted, self._decode(requests))) if requests else {}
        updates = []
        for i, (session, plan) in enumerate(zip(sessions, plans)):
            words = results.get(i, [])
            updates.append(self._settle(session, plan, words))
        return updates

    def _update_vad(self, sessions: list[WhisperSession]) -> None:
        """Score every new whole VAD window of every session, each with its own Silero state."""
        for s in sessions:
            done = len(s.vad_probs) * VAD_WINDOW
            new = _round_down(s.size - done, VAD_WINDOW)
            if new:
                s.vad_probs += self.vad.score(s.vad_state, s.buffer[done : done + new]).tolist()

    def _skip_silence(self, session: WhisperSession) -> None:
        """Drop silence before new speech: keep `preroll_s`, plus a pause's run-up only where it
        holds speech (the last phrase's tail). A step that brings seconds of silence and speech at
        once (a backlog, a replayed call) otherwise decodes from the silence's start: Whisper
        stretches the first word over it and loses the words after ("Mr. Apostle of the middle
        classes" for "Mr. Quilter is the apostle of the middle classes", 7 s of silence, 4 s steps)."""
        done = _heard_windows(session)
        threshold = self.config.vad_threshold
        first = next((i for i, p in enumerate(session.vad_probs[done:], done) if p >= threshold), None)
        if first is None:
            return
        onset = first * VAD_WINDOW - int(self.config.preroll_s * SAMPLE_RATE)
        cut = _round_down(onset - int(self.config.pause_context_s * SAMPLE_RATE), VAD_WINDOW)
        if not any(p >= threshold for p in session.vad_probs[max(cut, 0) // VAD_WINDOW : first]):
            # Run-up that is silence only helps no one; three seconds of it lost the words above.
            cut = _round_down(onset, VAD_WINDOW)
        if cut > done * VAD_WINDOW:
            _trim(session, cut)

    def _plan(self, session: WhisperSession, final: bool) -> "_Plan":
        """Which part of the buffer to decode now, and whether the phrase has ended there."""
        cfg = self.config
        done = _heard_windows(session)
        probs = np.asarray(session.vad_probs[done:])
        speech = np.flatnonzero(probs >= cfg.vad_threshold) + done
        scored = len(session.vad_probs) * VAD_WINDOW
        if final:
            scored = session.size  # the unscored tail (< one window) is decoded on finish
        if len(speech) == 0:
            return _Plan(min(scored, self.max_decode_samples), pause=True, has_speech=False, final=final)
        pad = int(cfg.speech_pad_s * SAMPLE_RATE)
        # A pause inside the buffer (missed because steps came late, e.g. under load) closes
        # the phrase before it, so a backlog is consumed phrase by phrase.
        gaps = np.flatnonzero(np.diff(speech) * VAD_WINDOW > int(cfg.pause_s * SAMPLE_RATE))
        if len(gaps):
            end = int(speech[gaps[0]] + 1) * VAD_WINDOW + pad
            if end <= self.max_decode_samples:
                return _Plan(end, pause=True, has_speech=True, final=final)
        speech_end = int(speech[-1] + 1) * VAD_WINDOW
        silent_tail = scored - speech_end
        if final or silent_tail >= int(cfg.pause_s * SAMPLE_RATE):
            end = min(speech_end + pad, scored)
            if end <= self.max_decode_samples:
                return _Plan(end, pause=True, has_speech=True, final=final)
        end = min(scored if not final else session.size, self.max_decode_samples)
        # A backlog longer than one decode: take the first part, cut at a silence if there is one.
        return _Plan(end, pause=final and end == session.size, has_speech=True, final=final)

    def _request(self, session: WhisperSession, plan: "_Plan") -> _Decode:
        # Words before the buffer are the prompt; the ones inside it are heard again, or with
        # `forced_prefix` forced as the start of the transcript.
        buffer_start = session.media_seconds(0)
        before = buffer_start + 0.05
        prompt_text = " ".join(w.text for w in session.committed_words if w.end <= before)
        prefix: list[int] = []
        if self.config.forced_prefix:
            inside = [w.text for w in session.committed_words if w.start >= buffer_start - 0.02]
            prefix = session.tokenizer.encode(" " + " ".join(inside)) if inside else []
            prefix = prefix[: MAX_DECODE_TOKENS // 2]
        previous = []
        if prompt_text and self.config.prompt_tokens > 0:
            previous = session.tokenizer.encode(" " + prompt_text)[-self.config.prompt_tokens :]
        prompt = self.model.get_prompt(
            session.tokenizer, previous, without_timestamps=True,
            hotwords=session.options.prompt or None,
        )
        # New tokens can only come from audio the prefix does not cover. The cap matters:
        # a decoder stuck repeating itself runs to it, and each token costs a decoder step.
        unheard = plan.region_end
        if prefix:
            unheard -= min(plan.region_end, _buffer_index(session, session.stabilizer.committed_end))
        budget = int(self.config.tokens_per_second * unheard / SAMPLE_RATE) + 8
        return _Decode(
            audio=session.buffer[: plan.region_end],
            tokenizer=session.tokenizer,
            prompt=prompt + prefix,
            prefix_len=len(prefix),
            max_length=min(MAX_DECODE_TOKENS, len(prompt) + len(prefix) + budget),
        )

    def _decode(self, requests: list[_Decode]) -> list[list[dict]]:
        """Batch-decode buffer regions → per request, words as dicts with region-relative times.

        Each region is padded with silence to a window that depends only on its own length
        (so a session decodes the same alone or in a small batch); equal windows share one
        batch. From `busy_batch` requests on, every request decodes greedily."""
        words: list[list[dict]] = [[] for _ in requests]
        groups: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(self._window_for(len(request.audio)), []).append(i)
        beam_size = self.config.beam_size if len(requests) < self.config.busy_batch else 1
        for window, rows in groups.items():
            for i, found in zip(rows, self._decode_window([requests[i] for i in rows], window, beam_size)):
                words[i] = found
        return words

    def _window_for(self, samples: int) -> int:
        """Encoder input length for a region: region + at least `min_pad_s` silence, in
        `window_step_s` buckets, at most `window_s` (shorter windows are cheaper to encode)."""
        cfg = self.config
        step = int(cfg.window_step_s * SAMPLE_RATE)
        wanted = _round_up(samples + int(cfg.min_pad_s * SAMPLE_RATE), step)
        return _round_up(min(wanted, self.window_samples), HOP * FRAMES_PER_ENCODER_STEP)

    def _decode_window(self, requests: list[_Decode], window_samples: int, beam_size: int) -> list[list[dict]]:
        import ctranslate2

        window_frames = window_samples // HOP
        features = np.zeros((len(requests), self._n_mels, window_frames), np.float32)
        for i, request in enumerate(requests):
            padded = np.zeros(window_samples, np.float32)
            padded[: len(request.audio)] = request.audio
            # Featurise audio+silence together so Whisper's log-mel normalisation sees the pad.
            features[i] = self.model.feature_extractor(padded)[:, :window_frames]
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(features))  # (B, T/2, D)
        # CTranslate2 needs <|startoftranscript|> at one position across a generate batch, so
        # requests are grouped by prompt-prefix length (fixed at `prompt_tokens` once a
        # session has that much history, so steady-state sessions share one group).
        groups: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.prompt.index(self.tokenizer.sot), []).append(i)
        results: list = [None] * len(requests)
        for rows in groups.values():
            generated = self.model.model.generate(
                _select(encoded, rows),
                [requests[i].prompt for i in rows],
                beam_size=beam_size,
                max_length=max(requests[i].max_length for i in rows),
                suppress_blank=True,
                suppress_tokens=self.suppress_tokens,
                return_scores=True,
                return_no_speech_prob=True,
            )
            for i, result in zip(rows, generated):
                results[i] = result
        texts = []
        for request, result in zip(requests, results):
            # The result repeats the forced prefix, then the new tokens.
            tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
            tokens = tokens[: request.max_length - len(request.prompt) + request.prefix_len]
            if len(tokens) <= request.prefix_len:
                tokens = []
            avg_logprob = result.scores[0] if result.scores else 0.0
            doubtful = (
                result.no_speech_prob > self.config.no_speech_threshold
                and avg_logprob < self.config.logprob_threshold
            )
            texts.append([] if doubtful else tokens)
        words: list[list[dict]] = [[] for _ in requests]
        aligned = [i for i, tokens in enumerate(texts) if tokens]
        if not aligned:
            return words
        # Word splitting depends on the language (no spaces in Chinese, Japanese, Thai, ...).
        by_language: dict[int, list[int]] = {}
        for i in aligned:
            by_language.setdefault(id(requests[i].tokenizer), []).append(i)
        for rows in by_language.values():
            alignments = self.model.find_alignment(
                requests[rows[0]].tokenizer,
                [texts[i] for i in rows],
                _select(encoded, rows),
                [len(requests[i].audio) // HOP for i in rows],
            )
            for i, alignment in zip(rows, alignments):
                words[i] = _new_words(alignment, requests[i].prefix_len)
        return words

    def _settle(self, session: WhisperSession, plan: "_Plan", raw: list[dict]) -> CaptionUpdate:
        """Stabilise one session's decode, then cut the buffer at the committed boundary."""
        cfg = self.config
        region_end = plan.region_end
        region_s = region_end / SAMPLE_RATE
        words = []
        for a in raw:
            start = min(max(float(a["start"]), 0.0), region_s)
            end = min(max(float(a["end"]), start), region_s)
            if not self._voiced(session, start, end):
                continue  # text over audio the VAD calls silence is invented
            first, last = int(start * SAMPLE_RATE), int(end * SAMPLE_RATE)
            first = self._onset(session, first, last)
            # A word cannot straddle a jump in media time: it belongs to the piece it ends in.
            first = max(first, session.piece_start(last))
            words.append(Word(
                text=a["word"].strip(),
                start=session.media_seconds(first),
                end=session.media_seconds(last),
                probability=float(a["probability"]),
            ))
        words = audio_backed(words, cfg.repetition)
        audio_end = session.media_seconds(region_end)
        result = session.stabilizer.update(words, audio_end, pause=plan.pause)
        if plan.pause:
            # Audio kept as run-up after a closed phrase must not open a phrase of its own.
            session.phrase_done_until = max(session.phrase_done_until, audio_end)
        session.committed_words = (session.committed_words + list(result.committed))[-cfg.prompt_words :]
        cut = self._cut(session, plan, result)
        cut = min(cut, session.size)
        if self.config.forced_prefix and 0 < cut < session.size:
            cut = _gap_cut(session, cut)
        if not (plan.final and cut == session.size):
            cut = _round_down(cut, VAD_WINDOW)  # keeps VAD windows aligned to the buffer start
        if cut > 0:
            _trim(session, cut)
        session.processed_until = max(session.processed_until, audio_end)
        return CaptionUpdate(
            committed=result.committed,
            tentative=result.tentative,
            segment_end=result.segment_end,
            processed_until=session.processed_until,
        )

    def _cut(self, session: WhisperSession, plan: "_Plan", result) -> int:
        """Where to cut the buffer after a decode: never before committed audio is done with."""
        preroll = int(self.config.preroll_s * SAMPLE_RATE)
        context = int(self.config.pause_context_s * SAMPLE_RATE)
        if not plan.has_speech:
            # Silence: drop it, but keep a little so a word starting now keeps its onset.
            return plan.region_end if plan.final else max(0, plan.region_end - preroll - context)
        if plan.pause:
            # The phrase is over and fully committed; its tail stays as run-up for the next.
            return plan.region_end if plan.final else max(0, plan.region_end - context)
        # Keep `context_s` of committed audio so the next decode starts mid-phrase with some
        # run-up (cutting right at a word's aligned end clips the next word's onset).
        cut = 0
        if session.size <= int(self.config.trim_after_s * SAMPLE_RATE):
            return 0  # short phrases are decoded whole: mid-phrase cuts cost accuracy
        keep_until = session.stabilizer.committed_end - self.config.context_s
        older = [w for w in session.committed_words if w.end <= keep_until]
        if older:
            cut = _buffer_index(session, older[-1].end)
            if result.tentative:
                cut = min(cut, _buffer_index(session, result.tentative[0].start))
        if cut == 0 and plan.region_end >= self.max_decode_samples:
            # A full decode window and nothing old enough to commit (noise the VAD took for
            # speech, or one endless "word"): drop its older part so the buffer stays bounded.
            session.stabilizer.reset_tentative()
            cut = plan.region_end - int(self.config.stabilizer.max_tentative_s * SAMPLE_RATE)
        return cut

    def _onset(self, session: WhisperSession, first: int, last: int) -> int:
        """A word's first sample, moved past silence the aligner stretched it over. Whisper stamps
        the first word after a long silence from where the silence began (seen on real speech:
        "Mr." at 0.0-7.7 s for a word said at 7.3 s), which would put it before words other
        channels have already finalised. It keeps `speech_pad_s` before the first voiced window,
        so an ordinary word's onset (the VAD lags it by a window or two) is left alone."""
        lo, hi = first // VAD_WINDOW, -(-last // VAD_WINDOW)
        voiced = next((i for i, p in enumerate(session.vad_probs[lo:hi]) if p >= self.config.vad_threshold), None)
        if voiced is None:
            return first
        onset = (lo + voiced) * VAD_WINDOW - int(self.config.speech_pad_s * SAMPLE_RATE)
        return min(max(first, onset), last)

    def _voiced(self, session: WhisperSession, start: float, end: float) -> bool:
        """Whether any VAD window within `speech_pad_s` of [start, end] (region seconds) is speech."""
        pad = self.config.speech_pad_s
        lo = max(0, int((start - pad) * SAMPLE_RATE) // VAD_WINDOW)
        hi = int((end + pad) * SAMPLE_RATE) // VAD_WINDOW + 1
        probs = session.vad_probs[lo:hi]
        # The unscored tail at finish has no probabilities yet: give it the benefit of the doubt.
        return not probs or max(probs) >= self.config.vad_threshold or hi > len(session.vad_probs)

    # ---- helpers ------------------------------------------------------------------------------

    def languages(self) -> tuple[str, ...]:
        """Whisper language codes this checkpoint transcribes."""
        return tuple(self.model.supported_languages)

    def _language(self, requested: str) -> str:
        """A session's BCP-47-ish language ("en-US", "de") → the checkpoint's language code."""
        code = requested.split("-")[0].split("_")[0].lower()
        if code not in self.languages():
            if not self.multilingual:
                raise EngineError(f"{self.spec.name} transcribes English only, not {requested!r}; "
                                  "a multilingual model (--model base) takes other languages")
            raise EngineError(f"{self.spec.name} has no language {requested!r}; known: {', '.join(self.languages())}")
        return code

    def _tokenizer(self, language: str):
        """One tokenizer per language, shared by the sessions that speak it."""
        from faster_whisper.tokenizer import Tokenizer

        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(
                self.model.hf_tokenizer, self.multilingual, task="transcribe", language=language
            )
        return self._tokenizers[language]

    @property
    def _n_mels(self) -> int:
        return self.model.feat_kwargs.get("feature_size", 80)

    def _warm_up(self) -> None:
        """One dummy decode so the first real step does not pay CTranslate2's start-up cost."""
        probe = _Decode(
            audio=np.zeros(SAMPLE_RATE, np.float32),
            tokenizer=self.tokenizer,
            prompt=self.model.get_prompt(self.tokenizer, [], without_timestamps=True),
            max_length=16,
        )
        self._decode([probe])
        self.vad.score(VadState(), np.zeros(VAD_WINDOW * 2, np.float32))

    def transcribe_offline(self, audio: np.ndarray, beam_size: int = 1, language: str = "en") -> list[Word]:
        """Whole-recording transcription on the same model (faster-whisper's own long-form
        decoding with its VAD filter), as the offline baseline for WER comparisons. Greedy by
        default, like the streaming engine: the baseline is the model's plain whole-file decode."""
        segments, _ = self.model.transcribe(
            np.asarray(audio, np.float32), language=self._language(language), beam_size=beam_size,
            vad_filter=True, word_timestamps=True,
        )
        return [
            Word(text=w.word.strip(), start=w.start, end=w.end, probability=w.probability)
            for segment in segments for w in (segment.words or [])
        ]


@dataclass(frozen=True)
class _Plan:
    """What a step decodes for one session."""

    region_end: int  # decode buffer[0:region_end]
    pause: bool  # the phrase has ended inside the region: commit everything decoded
    has_speech: bool  # the VAD heard speech in the region; if not, nothing is decoded
    final: bool = False  # end of stream: the whole buffer must be consumed


def transcribe_offline(audio: np.ndarray, model_path: str | None = None, beam_size: int = 1) -> list[Word]:
    """Convenience: build an engine and transcribe a whole recording (see the method)."""
    return WhisperEngine(WhisperEngineConfig(model_path=model_path)).transcribe_offline(audio, beam_size)


def load_whisper_model(model_path: str | None, compute_type: str = "int8", cpu_threads: int = 0):
    """A faster-whisper model from a local CTranslate2 directory or a bundled model's name
    ("tiny.en", "base": `model.whisper_models`; None: tiny.en). A directory of that name wins."""
    from faster_whisper import WhisperModel

    from patchstream.model.whisper_models import resolve_model

    path = resolve_model(model_path)
    if not os.path.isfile(os.path.join(path, "model.bin")):
        raise EngineError(f"no CTranslate2 Whisper model at {path!r} (model.bin missing)")
    # local_files_only: a bad path must fail here, never turn into a hub download.
    return WhisperModel(
        str(path), device="cpu", compute_type=compute_type,
        cpu_threads=cpu_threads or os.cpu_count() or 1, local_files_only=True,
    )


def _session(state: object) -> WhisperSession:
    if not isinstance(state, WhisperSession):
        raise EngineError("state was not opened by this WhisperEngine")
    return state


def _trim(session: WhisperSession, cut: int) -> None:
    """Drop buffer[0:cut] (cut a multiple of VAD_WINDOW), shifting audio, VAD and time map."""
    cut = min(cut, session.size)
    media_at_cut = session.media_sample(cut)
    remaining = session.size - cut
    session.buffer[:remaining] = session.buffer[cut : session.size]
    session.size = remaining
    session.vad_probs = session.vad_probs[cut // VAD_WINDOW :]
    later = [(i - cut, m) for i, m in session.anchors if i > cut]
    session.anchors = [(0, media_at_cut)] + later


def _heard_windows(session: WhisperSession) -> int:
    """VAD windows at the buffer start already heard: committed audio kept as run-up, which must
    not make a silent stretch look like speech. Only speech after them is new."""
    heard = max(session.stabilizer.committed_end, session.phrase_done_until)
    if heard > session.media_seconds(0):
        return _buffer_index(session, heard) // VAD_WINDOW
    return 0


def _buffer_index(session: WhisperSession, media_seconds: float) -> int:
    """Inverse of the time map for a time inside the buffer (nearest piece)."""
    target = int(round(media_seconds * SAMPLE_RATE))
    index = 0
    for anchor_index, anchor_media in session.anchors:
        if anchor_media <= target:
            index = anchor_index + (target - anchor_media)
    return max(0, min(index, session.size))


def _gap_cut(session: WhisperSession, cut: int) -> int:
    """Move a cut to the middle of the gap before the first committed word not wholly before
    it, so the buffer starts with whole words that the forced prefix can name."""
    at = session.media_seconds(cut)
    words = session.committed_words
    following = next((k for k, w in enumerate(words) if w.end > at), None)
    if following is None:
        return cut
    gap_start = words[following - 1].end if following else words[following].start - 0.1
    middle = (gap_start + words[following].start) / 2
    return cut if middle < session.media_seconds(0) else _buffer_index(session, middle)


def _new_words(alignment: list[dict], prefix_len: int) -> list[dict]:
    """Aligned words (faster-whisper dicts) → the decoded words after the forced prefix, with
    punctuation glued on. Punctuation is merged first: a "." right after the prefix belongs to
    a committed word and goes with it, instead of becoming a caption of its own."""
    from faster_whisper.transcribe import merge_punctuations

    merge_punctuations(alignment, PUNCT_BEFORE, PUNCT_AFTER)
    return [a for a in _after_prefix(alignment, prefix_len) if normalize_word(a["word"])]


def _after_prefix(alignment: list[dict], prefix_len: int) -> list[dict]:
    """The aligned words after the first `prefix_len` tokens (the forced prefix)."""
    seen = 0
    for index, word in enumerate(alignment):
        if seen >= prefix_len:
            return alignment[index:]
        seen += len(word["tokens"])
    return []


def _select(encoded, rows: list[int]):
    """Rows of a batched encoder output (CTranslate2 StorageView) as a new StorageView."""
    import ctranslate2

    if len(rows) == encoded.shape[0]:
        return encoded
    array = np.asarray(encoded)[rows]
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _round_down(value: int, multiple: int) -> int:
    return value // multiple * multiple


def build(choice) -> WhisperEngine:
    """Registry hook (`model.engines`): an `EngineChoice` → engine."""
    try:
        config = WhisperEngineConfig.from_options(choice.model_path, dict(choice.options))
    except TypeError as error:
        raise EngineError(f"bad whisper engine options: {error}") from error
    return WhisperEngine(config)
