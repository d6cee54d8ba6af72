"""eSpeak NG synthesis: audio format, word timings, scripts, repeat calls."""

from __future__ import annotations

import numpy as np
import pytest

from patchstream.clients import speech

pytestmark = pytest.mark.skipif(not speech.espeak_available(), reason="eSpeak NG is not installed")


def test_synthesize_returns_16khz_mono_float32_speech():
    out = speech.synthesize("The quick brown fox jumps over the lazy dog.")
    assert out.samples.dtype == np.float32 and out.samples.ndim == 1
    assert 1.5 < out.duration < 5.0  # nine words at about 165 words per minute
    assert 0.05 < np.abs(out.samples).max() <= 1.0
    assert out.text == "The quick brown fox jumps over the lazy dog."


def test_word_times_cover_every_word_in_order():
    out = speech.synthesize("Please bring two blue folders to the meeting.")
    assert [w.text for w in out.words] == out.text.split()
    starts = [w.start for w in out.words]
    assert starts == sorted(starts)
    for word in out.words:
        assert 0.0 <= word.start < word.end <= out.duration + 1e-6
    # The last word ends near the end of the sound, not at some arbitrary point.
    assert out.duration - out.words[-1].end < 0.3


def test_word_ends_are_trimmed_to_the_sound():
    out = speech.synthesize("Hello there, friend.")
    there = out.words[1]
    after = out.samples[int(there.end * speech.SAMPLE_RATE) : int(out.words[2].start * speech.SAMPLE_RATE)]
    assert len(after) == 0 or np.sqrt(np.mean(after**2)) < 0.02  # the comma pause is quiet


def test_repeated_calls_give_the_same_speech():
    # eSpeak carries a little state between utterances, so the waveform is not bit-identical.
    runs = [speech.synthesize("Repeat after me.") for _ in range(5)]
    for other in runs[1:]:
        assert abs(other.duration - runs[0].duration) < 0.02
        assert abs(np.std(other.samples) - np.std(runs[0].samples)) < 0.1 * np.std(runs[0].samples)
        assert [w.text for w in other.words] == ["Repeat", "after", "me."]


def test_script_joins_sentences_with_pauses_and_shifts_word_times():
    sentences = speech.CORPUS[:3]
    script = speech.build_script(sentences, pause_s=0.5, lead_s=0.25)
    singles = [speech.synthesize(s) for s in sentences]
    expected = 0.25 + sum(s.duration for s in singles) + 0.5 * len(sentences)
    assert abs(script.duration - expected) < 0.05  # eSpeak varies by a few ms per call
    assert script.text == " ".join(sentences)
    assert len(script.words) == sum(len(s.split()) for s in sentences)
    # The second sentence's first word starts after the first sentence and the pause.
    second = script.words[len(sentences[0].split())]
    assert abs(second.start - (0.25 + singles[0].duration + 0.5)) < 0.03
    lead = script.samples[: int(0.25 * speech.SAMPLE_RATE)]
    assert not lead.any()


def test_corpus_script_wraps_around_and_is_long_enough_for_benchmarks():
    assert len(speech.CORPUS) >= 25
    assert len(set(speech.CORPUS)) == len(speech.CORPUS)
    script = speech.corpus_script(count=2, first=len(speech.CORPUS) - 1)
    assert script.text == f"{speech.CORPUS[-1]} {speech.CORPUS[0]}"


def test_normalize_text_for_wer():
    assert speech.normalize_text("Hello,World!  It's 10.") == "hello world it's ten"
    assert speech.normalize_text("Boils at 100 degrees; 1,250 people, 21 days") == (
        "boils at one hundred degrees one thousand two hundred fifty people twenty one days"
    )
