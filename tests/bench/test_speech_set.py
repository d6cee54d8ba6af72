"""The speech-set loader: reading a directory laid out like shared/speech, selecting, errors."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest

from patchstream.bench import speech_set
from patchstream.bench.speech_set import SpeechSetError, load_speech_set, read_samples, select
from patchstream.bench.transcript_metrics import normalize_words, timed_reference

HEADER = "file\tduration_s\tspeakers\tsource\tlicence\tcondition\treference\tnote\n"


def write_wav(path, samples: np.ndarray, rate: int = 16_000) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((samples * 32767).astype("<i2").tobytes())


def make_set(root, rows: list[tuple[str, str, str, list[str], list[float]]]) -> None:
    """rows: (file, condition, reference, words, ends); each WAV is a second of quiet tone."""
    root.mkdir(exist_ok=True)
    lines, alignment = [HEADER], {}
    for name, condition, reference, words, ends in rows:
        write_wav(root / name, 0.1 * np.sin(np.linspace(0, 2000, 16_000)).astype(np.float32))
        lines.append(f"{name}\t1.00\t1\towner/repo:{name}\tCC0\t{condition}\t{reference}\ttest\n")
        alignment[name] = {"duration": 1.0, "words": words, "ends": ends}
    (root / "manifest.tsv").write_text("".join(lines))
    (root / "align.json").write_text(json.dumps(alignment))


ROWS = [
    ("a_read.wav", "read", "Mr. Smith said 'hello'.", ["mr", "smith", "said", "'hello'"], [0.2, 0.5, 0.7, 0.9]),
    ("b_noisy.wav", "noisy", "Six spoons.", ["six", "spoons"], [0.4, 0.8]),
    ("tel_a_read.wav", "telephony-sim", "Mr. Smith said 'hello'.", ["mr", "smith", "said", "'hello'"], [0.2, 0.5, 0.7, 0.9]),
]


def test_loads_every_row_with_its_words_and_times(tmp_path):
    make_set(tmp_path / "speech", ROWS)
    files = load_speech_set(tmp_path / "speech")
    assert [f.name for f in files] == ["a_read.wav", "b_noisy.wav", "tel_a_read.wav"]
    first = files[0]
    assert first.condition == "read" and first.duration_s == 1.0
    assert first.reference == "Mr. Smith said 'hello'."
    assert first.words == ("mr", "smith", "said", "'hello'") and first.ends == (0.2, 0.5, 0.7, 0.9)
    assert first.path == tmp_path / "speech" / "a_read.wav"


def test_missing_directory_says_where_it_looked_and_how_to_point_elsewhere(tmp_path):
    with pytest.raises(SpeechSetError, match="--speech-dir") as error:
        load_speech_set(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)


def test_a_row_without_its_wav_or_alignment_is_an_error(tmp_path):
    make_set(tmp_path, ROWS[:1])
    (tmp_path / "a_read.wav").unlink()
    with pytest.raises(SpeechSetError, match="a_read.wav"):
        load_speech_set(tmp_path)
    make_set(tmp_path, ROWS[:1])
    (tmp_path / "align.json").write_text("{}")
    with pytest.raises(SpeechSetError, match="no entry"):
        load_speech_set(tmp_path)


def test_words_and_ends_must_pair_up(tmp_path):
    make_set(tmp_path, [("x.wav", "read", "a b", ["a", "b"], [0.5])])
    with pytest.raises(SpeechSetError, match="2 words but 1 ends"):
        load_speech_set(tmp_path)


def test_select_by_condition_pattern_and_count(tmp_path):
    make_set(tmp_path, ROWS)
    files = load_speech_set(tmp_path)
    assert [f.name for f in select(files, condition="noisy")] == ["b_noisy.wav"]
    assert [f.name for f in select(files, pattern="tel_*")] == ["tel_a_read.wav"]
    assert [f.name for f in select(files, pattern="read")] == ["a_read.wav", "tel_a_read.wav"]
    assert [f.name for f in select(files, count=2)] == ["a_read.wav", "b_noisy.wav"]
    assert select(files) == files


def test_read_samples_gives_float_audio_and_refuses_other_rates(tmp_path):
    make_set(tmp_path, ROWS[:1])
    samples = read_samples(tmp_path / "a_read.wav")
    assert samples.dtype == np.float32 and samples.shape == (16_000,)
    assert 0.05 < np.abs(samples).max() <= 0.1 + 1e-3
    write_wav(tmp_path / "fast.wav", np.zeros(100, np.float32), rate=8_000)
    with pytest.raises(SpeechSetError, match="expected"):
        read_samples(tmp_path / "fast.wav")


@pytest.mark.skipif(not speech_set.default_speech_dir().is_dir(), reason="the shared speech set is not here")
def test_the_shared_set_loads_and_its_timed_words_are_its_normalized_references():
    files = load_speech_set()
    assert len(files) == 30
    assert {f.condition for f in files} == set(speech_set.CONDITIONS)
    for file in files:
        assert [w.text for w in timed_reference(file.words, file.ends)] == normalize_words(file.reference), file.name
        assert list(file.ends) == sorted(file.ends), file.name
