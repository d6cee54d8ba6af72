"""The CPU default engine on real synthesized speech (bundled tiny.en; nothing downloads)."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from patchstream.bench.speech_set import read_samples
from patchstream.clients import speech
from patchstream.model.api import AudioChunk, EngineError, SessionControl, SessionOptions, VideoFrame, Word
from patchstream.model.whisper_engine import WhisperEngineConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not speech.espeak_available(), reason="eSpeak NG is not installed"),
]

CHUNK = 640  # samples per 40 ms chunk, as the server's chunker cuts them


@pytest.fixture(scope="module")
def engine(whisper_engine):
    return whisper_engine


@pytest.fixture(scope="module")
def script():
    return speech.corpus_script(count=3, first=2)


def stream(engine, state, audio: np.ndarray, start: int = 0, step_s: float = 0.48, discontinuity=False):
    """Feed audio in 40 ms chunks, stepping every `step_s`; returns (committed, updates)."""
    committed: list[Word] = []
    updates = []
    per_step = int(step_s * 16_000) // CHUNK * CHUNK
    usable = len(audio) // CHUNK * CHUNK
    for offset in range(0, usable, CHUNK):
        engine.feed(state, AudioChunk(audio[offset : offset + CHUNK], start + offset,
                                      discontinuity=discontinuity and offset == 0))
        if (offset + CHUNK) % per_step == 0:
            update = engine.step([state])[0].captions
            committed += update.committed
            updates.append(update)
    return committed, updates


def wer(reference: str, words: list[Word]) -> float:
    return jiwer.wer(speech.normalize_text(reference), speech.normalize_text(" ".join(w.text for w in words)) or "-")


def test_spec_asks_for_batched_sub_second_steps(engine):
    assert engine.spec.max_batch > 1
    assert 0 < engine.spec.min_step_samples <= 16_000 // 2
    assert engine.spec.min_step_samples % 640 == 0
    assert engine.spec.name.startswith("whisper-tiny.en")


def test_beam_width_is_an_engine_option():
    assert WhisperEngineConfig.from_options(None, {"beam_size": 2}).beam_size == 2
    assert WhisperEngineConfig().beam_size >= 1


def test_streamed_transcript_is_close_to_the_reference_and_to_offline(engine, script):
    state = engine.open(SessionOptions())
    committed, updates = stream(engine, state, script.samples)
    committed += engine.finish(state).captions.committed
    streamed = wer(script.text, committed)
    offline = wer(script.text, engine.transcribe_offline(script.samples))
    # eSpeak's audio varies slightly between calls, so the bounds leave room for a word or two.
    assert streamed <= 0.2
    assert streamed <= offline + 0.12
    # Partials showed up before finals, and sentence ends/pauses closed segments.
    assert any(u.tentative for u in updates)
    assert sum(u.segment_end for u in updates) >= 2


def test_word_times_are_media_times_and_close_to_the_audio(engine, script):
    offset = 100 * 16_000  # the stream started 100 s ago (e.g. a late join)
    state = engine.open(SessionOptions())
    committed, _ = stream(engine, state, script.samples, start=offset)
    committed += engine.finish(state).captions.committed
    by_text = {}
    for ref in script.words:
        by_text.setdefault(speech.normalize_text(ref.text), []).append(ref)
    matched = 0
    for word in committed:
        refs = by_text.get(speech.normalize_text(word.text), [])
        close = [r for r in refs if abs((r.end + 100) - word.end) < 0.5]
        matched += bool(close)
        assert 100.0 <= word.start <= word.end <= 100 + script.duration + 0.1
    assert matched >= 0.8 * len(script.words)
    ends = [w.end for w in committed]
    assert ends == sorted(ends)


def test_discontinuity_keeps_times_on_the_new_timeline(engine, real_speech):
    # Recorded speech, not eSpeak: eSpeak's waveform depends on what it said before in the
    # process, so a test order could change the words decoded here.
    first, second = real_speech["arctic_aew_a0003.wav"], real_speech["ls_1995-1837-0001.wav"]
    pad = np.zeros(16_000, np.float32)
    state = engine.open(SessionOptions())
    a, _ = stream(engine, state, np.concatenate([pad[:4800], read_samples(first.path), pad]))
    b, _ = stream(engine, state, np.concatenate([read_samples(second.path), pad]), start=60 * 16_000, discontinuity=True)
    b += engine.finish(state).captions.committed
    assert a and b
    assert all(w.end < 10 for w in a)
    assert all(w.start >= 60 for w in b)
    assert wer(second.reference, b) <= 0.25


def test_silence_and_white_noise_produce_no_words(engine):
    rng = np.random.default_rng(7)
    for audio in (np.zeros(8 * 16_000, np.float32), (0.05 * rng.standard_normal(8 * 16_000)).astype(np.float32)):
        state = engine.open(SessionOptions())
        committed, updates = stream(engine, state, audio)
        final = engine.finish(state).captions
        assert committed == [] and final.committed == ()
        assert all(u.tentative == () for u in updates)
        assert final.processed_until == pytest.approx(8.0, abs=0.05)
        engine.close(state)


def test_finish_commits_everything_without_any_step(engine):
    sentence = speech.synthesize(speech.CORPUS[5])
    state = engine.open(SessionOptions())
    for offset in range(0, len(sentence.samples) // CHUNK * CHUNK, CHUNK):
        engine.feed(state, AudioChunk(sentence.samples[offset : offset + CHUNK], offset))
    update = engine.finish(state).captions
    assert update.tentative == ()
    assert update.segment_end
    assert wer(sentence.text, list(update.committed)) <= 0.2


def test_two_sessions_batched_give_the_same_words_as_one_at_a_time(engine, real_speech):
    audios = [read_samples(real_speech[name].path) for name in ("arctic_aew_a0002.wav", "ls_1272-128104-0000.wav")]
    n = max(len(a) for a in audios) // CHUNK * CHUNK + 16_000
    audios = [np.pad(a, (0, n - len(a))) for a in audios]

    def run(batched: bool) -> list[list[str]]:
        states = [engine.open(SessionOptions()) for _ in audios]
        words: list[list[str]] = [[] for _ in audios]
        per_step = 12 * CHUNK
        for offset in range(0, n, per_step):
            for state, audio in zip(states, audios):
                for o in range(offset, min(offset + per_step, n), CHUNK):
                    engine.feed(state, AudioChunk(audio[o : o + CHUNK], o))
            groups = [states] if batched else [[s] for s in states]
            updates = [r.captions for group in groups for r in engine.step(group)]
            for i, update in enumerate(updates):
                words[i] += [w.text for w in update.committed]
        for i, state in enumerate(states):
            words[i] += [w.text for w in engine.finish(state).captions.committed]
        return words

    assert run(batched=True) == run(batched=False)


def test_buffer_stays_bounded_over_a_long_stream(engine, monkeypatch):
    """An hour-long stream's cost is flat because the buffer is cut at committed words. The
    recogniser is replaced by a fake so 20 minutes of 'speech' run in seconds; the real VAD
    is replaced too (it would call a synthetic tone silence)."""
    word_s = 0.3

    def fake_decode(requests):
        # One word per 0.3 s of region, like continuous fast speech, times region-relative.
        out = []
        for request in requests:
            length = len(request.audio) / 16_000
            out.append([
                {"word": f" w{k}", "start": k * word_s, "end": k * word_s + 0.25, "probability": 0.9}
                for k in range(int(length / word_s))
            ])
        return out

    monkeypatch.setattr(engine, "_decode", fake_decode)
    monkeypatch.setattr(engine.vad, "score", lambda state, audio: np.full(len(audio) // 512, 0.9, np.float32))
    state = engine.open(SessionOptions())
    step = engine.spec.min_step_samples
    chunk = np.full(step, 0.1, np.float32)
    biggest = 0
    committed = 0
    for index in range(int(20 * 60 * 16_000 / step)):
        engine.feed(state, AudioChunk(chunk, index * step))
        update = engine.step([state])[0].captions
        committed += len(update.committed)
        biggest = max(biggest, state.size)
    limit = engine.max_decode_samples + step
    assert biggest <= limit
    assert committed > 0.5 * (20 * 60 / word_s) * 0.5  # words keep flowing, nothing stalls
    assert len(state.vad_probs) <= limit // 512 + 1


def test_run_up_kept_after_a_pause_is_not_transcribed_again(engine):
    """After a phrase closes, its last seconds stay in the buffer as context for the next one;
    steps over that run-up and the silence after it must not invent words (a decoder asked to
    continue a finished sentence over silence says things like "2.")."""
    sentence = speech.synthesize(speech.CORPUS[8])
    audio = np.concatenate([np.zeros(4800, np.float32), sentence.samples, np.zeros(4 * 16_000, np.float32)])
    state = engine.open(SessionOptions())
    committed, updates = stream(engine, state, audio, step_s=0.24)
    committed += engine.finish(state).captions.committed
    spoken_until = 0.3 + sentence.duration
    assert wer(sentence.text, committed) <= 0.2
    assert all(w.end <= spoken_until + 0.3 for w in committed)
    assert not any(u.tentative for u in updates[-8:])  # nothing pending during the silence


def test_forced_prefix_carries_context_and_can_be_switched_off():
    config = WhisperEngineConfig()
    assert config.forced_prefix and config.pause_context_s > 0 and config.context_s > 0
    assert not WhisperEngineConfig.from_options(None, {"forced_prefix": 0}).forced_prefix


def test_words_of_the_forced_prefix_are_not_reported_again():
    from patchstream.model.whisper_engine import _after_prefix

    alignment = [{"word": " The", "tokens": [1]}, {"word": " morning", "tokens": [2, 3]},
                 {"word": " train", "tokens": [4]}, {"word": " was", "tokens": [5]}]
    assert [a["word"] for a in _after_prefix(alignment, 3)] == [" train", " was"]
    assert _after_prefix(alignment, 0) == alignment
    assert _after_prefix(alignment, 5) == []


def test_punctuation_right_after_the_prefix_never_becomes_a_word_of_its_own():
    from patchstream.model.whisper_engine import _new_words

    alignment = [{"word": " at", "tokens": [1]}, {"word": " 10", "tokens": [2]},
                 {"word": ".", "tokens": [3]}, {"word": " Please", "tokens": [4]}]
    assert [a["word"] for a in _new_words(alignment, 2)] == [" Please"]
    alignment = [{"word": " at", "tokens": [1]}, {"word": " ten", "tokens": [2]}, {"word": ".", "tokens": [3]}]
    assert [a["word"] for a in _new_words(alignment, 1)] == [" ten."]


def test_video_and_instructions_are_refused_with_a_clear_error(engine):
    state = engine.open(SessionOptions())
    with pytest.raises(EngineError, match="audio only"):
        engine.feed(state, VideoFrame(np.zeros((4, 4, 3), np.uint8), 0))
    with pytest.raises(EngineError, match="instructions"):
        engine.control(state, SessionControl(instruction="describe"))
    engine.control(state, SessionControl(prompt="Patchstream"))  # prompts change mid-session
    assert state.options.prompt == "Patchstream"
    engine.close(state)
