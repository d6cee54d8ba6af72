"""Guards against decoded text the audio does not back: text past the audio, loops."""

from __future__ import annotations

from patchstream.model.api import Word
from patchstream.model.repetition import (
    RepetitionConfig,
    audio_backed,
    compression_ratio,
    cut_loop,
    drop_text_past_audio,
)


def words(*timed: tuple[str, float, float]) -> list[Word]:
    return [Word(text, start, end) for text, start, end in timed]


def texts(found: list[Word]) -> list[str]:
    return [w.text for w in found]


def test_a_sentence_said_again_into_the_silence_is_dropped():
    # tiny.en on "Please call Stella." followed by silence: the repeat has no audio of its own.
    decoded = words(("Please,", 0.0, 0.94), ("call", 1.1, 1.3), ("Stella.", 1.3, 1.46),
                    ("Please", 1.46, 1.46), ("call", 1.46, 1.46), ("Stella.", 1.46, 1.56))
    assert texts(audio_backed(decoded)) == ["Please,", "call", "Stella."]


def test_a_trailing_word_with_no_audio_is_dropped():
    decoded = words(("No.", 0.0, 1.66), ("No.", 2.0, 2.0))
    assert texts(drop_text_past_audio(decoded)) == ["No."]


def test_a_misaligned_real_word_followed_by_real_audio_is_kept():
    # "Philip" got no frames of its own, but "Steels" after it covers 0.58 s of speech.
    decoded = words(("Trail,", 1.3, 1.92), ("Philip", 2.42, 2.42), ("Steels,", 2.42, 3.0))
    assert texts(drop_text_past_audio(decoded)) == ["Trail,", "Philip", "Steels,"]


def test_words_squeezed_into_a_few_frames_count_as_text_past_the_audio():
    decoded = words(("word,", 32.6, 32.85), ("word,", 32.97, 32.97), ("word,", 33.03, 33.07),
                    ("word,", 33.07, 33.15), ("word,", 33.15, 33.15), ("word,", 33.29, 33.29))
    assert texts(drop_text_past_audio(decoded)) == ["word,"]


def test_a_decoder_loop_keeps_two_copies_and_a_speaker_repeat_survives():
    loop = words(*[("five", 0.1 * i, 0.1 * i + 0.1) for i in range(16)])
    assert compression_ratio(" ".join(texts(loop))) > RepetitionConfig().max_compression_ratio
    assert texts(cut_loop(loop)) == ["five", "five"]
    said = words(("five", 0.0, 0.3), ("five", 0.4, 0.7), ("to", 0.8, 0.9), ("go", 0.9, 1.2))
    assert cut_loop(said) == said


def test_a_multi_word_loop_is_cut_after_its_second_copy():
    unit = ["my", "fellow", "Americans"]
    loop = words(*[(unit[i % 3], 0.2 * i, 0.2 * i + 0.2) for i in range(18)])
    assert texts(cut_loop(loop)) == unit * 2


def test_plain_speech_passes_untouched():
    decoded = words(("The", 0.0, 0.2), ("morning", 0.2, 0.6), ("train", 0.6, 0.9), ("was", 0.9, 1.0))
    assert audio_backed(decoded) == decoded
    assert audio_backed([]) == []


def test_a_loop_squeezed_into_a_few_frames_is_cut_even_when_long_words_follow_it():
    # Greedy tiny.en on a disfluent speaker: a loop packed into 0.2 s, then fillers the aligner
    # stretched over seconds, so the words to the end average plenty of audio each.
    decoded = words(("word", 23.5, 23.7), ("Montreal", 23.7, 23.7), ("forced", 23.7, 23.72),
                    ("word", 23.72, 23.72), ("word", 23.72, 23.74), ("Montreal", 23.74, 23.8),
                    ("uh", 28.83, 29.97), ("um", 29.97, 32.65))
    assert texts(drop_text_past_audio(decoded)) == ["word"]


def test_fast_real_speech_is_not_mistaken_for_a_dense_run():
    decoded = words(("and", 0.0, 0.1), ("it", 0.1, 0.18), ("is", 0.18, 0.3), ("a", 0.3, 0.36), ("cat", 0.36, 0.7))
    assert drop_text_past_audio(decoded) == decoded
