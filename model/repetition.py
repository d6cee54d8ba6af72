"""Sans-I/O guards against decoded text that the audio does not back.

It is: two rules applied to one decode's aligned words before anything is committed.

- **Text past the audio.** A small Whisper given a short stretch of speech followed by silence
  often says it again ("Please call Stella. Please call Stella."), or keeps going in a loop. The
  word alignment then finds no audio for the extra words: they get zero length, or a run of them
  shares a few frames. So the decode is cut at a word shorter than `min_seconds_per_word` that
  starts `dense_run` words sharing less than that much audio each, and at a zero-length word
  when the words from it to the end average less than that. A zero-length word followed by words with real
  audio is a misalignment of a real word and is kept.
- **Loops.** Whisper's own test for a degenerate decode is a gzip compression ratio above 2.4.
  When the text fails it, it is cut at the third consecutive copy of its repeating n-gram, so a
  speaker's "five five" survives and a decoder's "five five five five ..." does not.

It is not: the commit policy (`model.stabilizer`), and it never looks at audio, only at the times
the aligner gave each word.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from patchstream.model.api import Word
from patchstream.model.stabilizer import normalize_word


@dataclass(frozen=True)
class RepetitionConfig:
    """Knobs of the two guards."""

    min_seconds_per_word: float = 0.08  # real speech runs at most ~6 words/s even when fast
    dense_run: int = 4  # this many words in a row that short are never speech
    max_compression_ratio: float = 2.4  # Whisper's threshold for a repetitive decode
    max_ngram: int = 4  # longest repeating unit the loop cutter looks for
    kept_copies: int = 2  # a loop keeps this many consecutive copies of its unit


def audio_backed(words: list[Word], config: RepetitionConfig = RepetitionConfig()) -> list[Word]:
    """The words of one decode with text past the audio and repetition loops removed."""
    return cut_loop(drop_text_past_audio(words, config), config)


def drop_text_past_audio(words: list[Word], config: RepetitionConfig = RepetitionConfig()) -> list[Word]:
    """Cut at the first run of words that has too little audio per word (see the module doc)."""
    shortest = config.min_seconds_per_word
    for i, word in enumerate(words):
        if word.end - word.start >= shortest:
            continue  # a run of text without audio starts with a word without audio
        run = words[i : i + config.dense_run]
        if len(run) == config.dense_run and run[-1].end - word.start < shortest * len(run):
            return words[:i]
        if word.end <= word.start and words[-1].end - word.start < shortest * (len(words) - i):
            return words[:i]
    return words


def compression_ratio(text: str) -> float:
    """Bytes of text per byte of its zlib compression (Whisper's repetitiveness measure)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def cut_loop(words: list[Word], config: RepetitionConfig = RepetitionConfig()) -> list[Word]:
    """Cut a repetitive decode at the first copy of an n-gram beyond `kept_copies` in a row."""
    if compression_ratio(" ".join(w.text for w in words)) <= config.max_compression_ratio:
        return words
    keys = [normalize_word(w.text) for w in words]
    for i in range(len(keys)):
        for n in range(1, config.max_ngram + 1):
            copies = 1
            while keys[i : i + n] == keys[i + copies * n : i + (copies + 1) * n]:
                copies += 1
            if copies > config.kept_copies:
                return words[: i + config.kept_copies * n]
    return words
