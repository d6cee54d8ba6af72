"""Transcript metrics for the benchmarks: normalization, WER with its error counts, repeated
phrases, and caption latency against reference word end times.

It is: sans-I/O functions over words and numbers. Text is normalized as the speech set's
`align.json` normalizes its reference words, then numbers are spelled out; WER and its
insertions/deletions/substitutions come from `jiwer.process_words`; latency matches caption
words seen at the client (`Sighting`) to timed reference words by normalized text and time.

It is not: a reader of files or of the wire protocol (`bench/speech_set.py` loads the set,
`bench/latency.py` turns server events into sightings), and not a general text normalizer
(no British/American spellings, contractions or filler handling, unlike Whisper's).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Sequence

import jiwer
import numpy as np

from patchstream.clients.speech import TimedWord, number_words

MATCH_SLACK_S = 0.6  # a caption word is a reference word if their times overlap within this
MAX_WORD_S = 1.0  # a reference word starts at most this long before its end (pauses are not words)
MIN_REPEAT_WORDS = 3  # a repeated phrase is at least this many words long
MAX_SPELLED_DIGITS = 6  # number_words spells numbers below a million


def normalize_words(text: str) -> list[str]:
    """Words in the form WER and matching use: align.json's rule, then numbers spelled out.

    align.json's rule is applied per whitespace-separated token: lower case, everything but
    a-z, 0-9 and ' removed, empty tokens dropped ("forty-two" → "fortytwo", "Mr." → "mr").
    `clients.speech.normalize_text` splits at punctuation instead ("forty two"), so it would not
    give the timed reference words one for one; its number spelling (`number_words`) is reused,
    because Whisper writes "at 10" where references say "at ten" and the sonnet headings are "1".
    A typographic apostrophe counts as a plain one, so "I’m" is still "i'm".
    """
    words = []
    for token in text.lower().replace("\u2019", "'").split():
        word = re.sub(r"[^a-z0-9']", "", token)
        if word.isdigit() and len(word) <= MAX_SPELLED_DIGITS:
            words += number_words(int(word)).split()
        elif word:
            words.append(word)
    return words


def timed_reference(words: Sequence[str], ends: Sequence[float]) -> tuple[TimedWord, ...]:
    """align.json's (words, ends) in the normalized form, each with a start for matching.

    align.json gives only ends; a word starts where the one before it ended, but no earlier than
    MAX_WORD_S before its own end, so a pause before it does not widen its match window. A number
    spelled into several words gives each of them the number's times.
    """
    timed, previous_end = [], 0.0
    for word, end in zip(words, ends):
        start = max(previous_end, end - MAX_WORD_S)
        timed += [TimedWord(text, min(start, end), end) for text in normalize_words(word)]
        previous_end = end
    return tuple(timed)


@dataclass(frozen=True)
class WordErrors:
    """Edit-distance counts of a hypothesis against a reference; they add up over files."""

    reference_words: int  # words in the reference
    substitutions: int
    deletions: int  # reference words missing from the hypothesis
    insertions: int  # hypothesis words with no reference word

    @property
    def wer(self) -> float:
        errors = self.substitutions + self.deletions + self.insertions
        return errors / self.reference_words if self.reference_words else float("nan")

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.reference_words + other.reference_words, self.substitutions + other.substitutions,
            self.deletions + other.deletions, self.insertions + other.insertions,
        )


NO_ERRORS = WordErrors(0, 0, 0, 0)  # the sum of no files


def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> WordErrors:
    """WER counts of normalized hypothesis words against normalized reference words."""
    if not reference:
        return WordErrors(0, 0, 0, len(hypothesis))  # jiwer refuses an empty reference
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return WordErrors(len(reference), out.substitutions, out.deletions, out.insertions)


def repeated_phrases(hypothesis: Sequence[str], reference: Sequence[str], min_words: int = MIN_REPEAT_WORDS) -> int:
    """How many phrases of `min_words`+ words the hypothesis says twice in a row ("a b c a b c")
    that the reference does not say twice in a row itself (see `repeat_spans`)."""
    return len(repeat_spans(hypothesis, reference, min_words))


def repeat_spans(hypothesis: Sequence[str], reference: Sequence[str], min_words: int = MIN_REPEAT_WORDS) -> list[tuple[int, int]]:
    """[first, end) word indices of each repeated phrase in the hypothesis, in order.

    A repeat is a maximal run where the words `period` apart agree for at least `period` words
    (period ≥ min_words); a run overlapping another (the same stutter seen at another period,
    "a b c a b c a b c a b c" at 3 and 6) is the same repeat and counts once. A run is the
    reference's own when the reference contains the run's whole stretch of words, or when the
    WER alignment finds at most half a copy's worth of inserted words in it: the speaker said it
    twice and a word was misheard both times ("for a stilliner for a stilliner" for "forced
    aligner forced aligner" leaves one inserted word per four-word copy).
    """
    hyp, ref = list(hypothesis), " " + " ".join(reference) + " "
    inserted = _inserted(reference, hyp)
    spans = []  # (first word, end) of each run the reference does not make
    for period in range(min_words, len(hyp) // 2 + 1):
        agree = 0  # consecutive positions i with hyp[i] == hyp[i + period], ending at i
        for i in range(len(hyp) - period + 1):
            if i < len(hyp) - period and hyp[i] == hyp[i + period]:
                agree += 1
                continue
            if agree >= period:  # the run hyp[i - agree : i] is repeated right after itself
                first, end = i - agree, i + period
                said_twice = " " + " ".join(hyp[first:end]) + " " in ref
                if not said_twice and 2 * sum(inserted[first:end]) > period:
                    spans.append((first, end))
            agree = 0
    return _merged(spans)


def _inserted(reference: Sequence[str], hypothesis: Sequence[str]) -> list[bool]:
    """Per hypothesis word: whether the WER alignment calls it an insertion."""
    flags = [False] * len(hypothesis)
    if not hypothesis or not reference:
        return [True] * len(hypothesis)
    for chunk in jiwer.process_words(" ".join(reference), " ".join(hypothesis)).alignments[0]:
        if chunk.type == "insert":
            flags[chunk.hyp_start_idx : chunk.hyp_end_idx] = [True] * (chunk.hyp_end_idx - chunk.hyp_start_idx)
    return flags


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping [first, end) spans joined into one; spans that only touch stay apart."""
    merged: list[tuple[int, int]] = []
    for first, end in sorted(spans):
        if merged and first < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((first, end))
    return merged


@dataclass(frozen=True)
class Sighting:
    """One normalized caption word as the client saw it in one event."""

    client_time_s: float  # when the event arrived, on the session's media clock
    text: str  # one normalized word
    start: float  # media seconds the engine gave the word
    end: float
    stable: bool  # committed: it will appear unchanged in the final captions


@dataclass(frozen=True)
class Latencies:
    """Per-word caption latency (client time − the word's end), seconds."""

    first_seen: tuple[float, ...]  # the word first appeared in any caption event
    final: tuple[float, ...]  # the word was first shown as committed
    missing_first_seen: int  # committed words not seen before (cannot happen with partials on)


def first_sighting(sightings: Sequence[Sighting], word: TimedWord) -> float | None:
    """When a caption word with the reference word's text and roughly its times first arrived."""
    for seen in sightings:  # in arrival order
        if seen.text == word.text and seen.start <= word.end + MATCH_SLACK_S and seen.end >= word.start - MATCH_SLACK_S:
            return seen.client_time_s
    return None


def word_latencies(reference: Sequence[TimedWord], hypothesis: Sequence[str], sightings: Sequence[Sighting]) -> Latencies:
    """Latencies of the reference words the final hypothesis got right (a wrong word has none).

    Reference and hypothesis words are aligned with difflib; a matched word's final latency is
    its first committed sighting, its first-seen latency its first sighting of any kind.
    """
    stable = [s for s in sightings if s.stable]
    first_seen, final, missing = [], [], 0
    matcher = difflib.SequenceMatcher(a=[w.text for w in reference], b=list(hypothesis), autojunk=False)
    for block in matcher.get_matching_blocks():
        for word in reference[block.a : block.a + block.size]:
            committed = first_sighting(stable, word)
            if committed is None:
                continue
            final.append(committed - word.end)
            shown = first_sighting(sightings, word)
            if shown is None:
                missing += 1
            else:
                first_seen.append(shown - word.end)
    return Latencies(tuple(first_seen), tuple(final), missing)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, NaN for no values (a table prints it as such)."""
    return float(np.percentile(values, q)) if len(values) else float("nan")
