"""Transcript metrics: normalization, WER counts, repeated phrases, latency matching."""

from __future__ import annotations

import math

import pytest

from patchstream.bench.transcript_metrics import (
    MAX_WORD_S,
    NO_ERRORS,
    Sighting,
    WordErrors,
    normalize_words,
    percentile,
    repeat_spans,
    repeated_phrases,
    timed_reference,
    word_errors,
    word_latencies,
)


def words(text: str) -> list[str]:
    return text.split()


# --- normalization -------------------------------------------------------------------------

def test_normalize_follows_the_align_json_rule_per_token():
    assert normalize_words("Mr. Quilter, forty-two! God bless 'em -- I'll go.") == [
        "mr", "quilter", "fortytwo", "god", "bless", "'em", "i'll", "go"
    ]


def test_normalize_spells_numbers_on_both_sides_alike():
    assert normalize_words("at 10, about 1,200 and 1") == words("at ten about one thousand two hundred and one")
    assert normalize_words("at ten") == normalize_words("at 10")


def test_normalize_treats_a_typographic_apostrophe_as_plain():
    assert normalize_words("I\u2019m here") == ["i'm", "here"]


def test_timed_reference_starts_words_at_the_previous_end_within_a_cap():
    timed = timed_reference(["the", "1", "end"], [0.5, 0.9, 5.0])
    assert [w.text for w in timed] == ["the", "one", "end"]
    assert (timed[0].start, timed[0].end) == (0.0, 0.5)
    assert (timed[1].start, timed[1].end) == (0.5, 0.9)
    assert timed[2].start == pytest.approx(5.0 - MAX_WORD_S)  # the pause before it is not the word


def test_timed_reference_gives_a_spelled_number_its_times():
    timed = timed_reference(["year", "1455"], [1.0, 2.0])
    assert [w.text for w in timed[1:]] == words("one thousand four hundred fifty five")
    assert {w.end for w in timed[1:]} == {2.0}


# --- WER -----------------------------------------------------------------------------------

def test_word_errors_counts_each_kind():
    errors = word_errors(words("a b c d"), words("a x c d e"))
    assert errors == WordErrors(reference_words=4, substitutions=1, deletions=0, insertions=1)
    assert errors.wer == pytest.approx(0.5)
    assert word_errors(words("a b c"), []) == WordErrors(3, 0, 3, 0)


def test_word_errors_add_up_over_files():
    total = sum([word_errors(["a", "b"], ["a"]), word_errors(["c"], ["d", "e"])], NO_ERRORS)
    assert total == WordErrors(3, 1, 1, 1)
    assert total.wer == pytest.approx(1.0)
    assert math.isnan(NO_ERRORS.wer)


# --- repeated phrases ----------------------------------------------------------------------

def test_a_phrase_committed_twice_in_a_row_is_one_repeat():
    assert repeated_phrases(words("so we went to the shop we went to the shop and"), words("so we went to the shop and")) == 1


def test_short_repeats_do_not_count():
    assert repeated_phrases(words("the the cat sat on on the mat"), words("the cat sat on the mat")) == 0
    assert repeated_phrases(words("a b a b"), words("a b")) == 0


def test_a_repeat_the_reference_says_itself_does_not_count():
    reference = words("you know montreal forced aligner montreal forced aligner i hardly know her")
    assert repeated_phrases(reference, reference) == 0


def test_a_repeat_longer_than_the_reference_says_counts():
    reference = words("montreal forced aligner montreal forced aligner")
    assert repeated_phrases(words("montreal forced aligner montreal forced aligner montreal forced aligner"), reference) == 1


def test_a_phrase_the_speaker_said_twice_and_was_misheard_twice_does_not_count():
    reference = words("you know montreal forced aligner montreal forced aligner i hardly know her")
    hypothesis = words("you know montreal forced liner montreal forced liner i hardly know her")
    assert repeated_phrases(hypothesis, reference) == 0
    thrice = words("you know montreal forced liner montreal forced liner montreal forced liner i hardly know her")
    assert repeated_phrases(thrice, reference) == 1


def test_each_maximal_repeat_counts_once():
    # Three copies are one stutter, seen at period 3 (and its multiples) over one stretch.
    assert repeated_phrases(words("x a b c a b c a b c a b c y"), words("x a b c y")) == 1
    # A longer doubled phrase is one repeat, not one per 3-word window inside it.
    assert repeated_phrases(words("one two three four five one two three four five six"), words("one two six")) == 1


def test_separate_repeats_count_separately():
    hypothesis = words("a b c a b c then d e f d e f")
    assert repeated_phrases(hypothesis, words("a b c then d e f")) == 2


def test_repeat_spans_cover_both_copies():
    hypothesis = words("x a b c a b c a b c y d e f d e f")
    assert repeat_spans(hypothesis, words("x a b c y d e f")) == [(1, 10), (11, 17)]


def test_no_repeats_in_plain_text():
    assert repeated_phrases(words("the quick brown fox jumps over the lazy dog"), []) == 0
    assert repeated_phrases([], []) == 0


# --- latency -------------------------------------------------------------------------------

def test_latency_is_first_sighting_minus_the_word_end():
    reference = timed_reference(["hello", "world"], [1.0, 2.0])
    seen = [
        Sighting(1.3, "hello", 0.5, 1.0, stable=False),
        Sighting(1.8, "hello", 0.5, 1.0, stable=True),
        Sighting(2.4, "world", 1.1, 2.0, stable=False),
        Sighting(3.0, "world", 1.1, 2.0, stable=True),
    ]
    latencies = word_latencies(reference, ["hello", "world"], seen)
    assert latencies.first_seen == pytest.approx((0.3, 0.4))
    assert latencies.final == pytest.approx((0.8, 1.0))
    assert latencies.missing_first_seen == 0


def test_only_words_the_final_text_got_right_are_timed():
    reference = timed_reference(["hello", "world"], [1.0, 2.0])
    seen = [Sighting(1.5, "hello", 0.5, 1.0, True), Sighting(2.5, "word", 1.1, 2.0, True)]
    assert word_latencies(reference, ["hello", "word"], seen).final == pytest.approx((0.5,))


def test_a_same_text_word_far_away_in_time_is_not_a_match():
    reference = timed_reference(["go", "now", "go"], [1.0, 5.0, 9.0])
    seen = [Sighting(1.2, "go", 0.6, 1.0, True), Sighting(5.4, "now", 4.6, 5.0, True), Sighting(9.5, "go", 8.6, 9.0, True)]
    assert word_latencies(reference, ["go", "now", "go"], seen).final == pytest.approx((0.2, 0.4, 0.5))


def test_percentile_of_nothing_is_nan():
    assert math.isnan(percentile([], 50))
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
