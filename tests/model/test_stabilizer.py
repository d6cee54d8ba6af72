"""The commit policy against a fake backend: a scripted recogniser re-decoding a sliding buffer."""

from __future__ import annotations

from patchstream.model.api import Word
from patchstream.model.stabilizer import Stabilizer, StabilizerConfig, normalize_word

# A "true" transcript with times: what a perfect recogniser would say about the audio.
TRUTH = [
    Word("The", 0.30, 0.45), Word("morning", 0.45, 0.85), Word("train", 0.85, 1.20),
    Word("was", 1.20, 1.40), Word("late", 1.40, 1.70), Word("again.", 1.70, 2.20),
    Word("Please", 3.00, 3.30), Word("bring", 3.30, 3.60), Word("two", 3.60, 3.80),
    Word("folders.", 3.80, 4.40),
]


def fake_hypothesis(audio_end: float, committed_end: float, garble_last: bool = True) -> list[Word]:
    """What a re-decode over [committed_end - 0.5, audio_end] hears: words that have started,
    the one still being spoken misheard, times jittered a little as re-decodes do."""
    heard = [w for w in TRUTH if w.start < audio_end and w.end > committed_end - 0.5]
    words = []
    for w in heard:
        end = min(w.end, audio_end)
        text = w.text
        if garble_last and w.end > audio_end:
            text = text[: max(1, len(text) // 2)] + "-"  # a cut word is misheard
        words.append(Word(text, w.start + 0.02, end - 0.01))
    return words


def run_stream(config: StabilizerConfig = StabilizerConfig(), step: float = 0.25, until: float = 5.0):
    stabilizer = Stabilizer(config)
    committed: list[tuple[Word, float]] = []  # (word, audio time when committed)
    tentatives: list[tuple[Word, ...]] = []
    segment_ends = []
    t = step
    while t <= until + 1e-9:
        pause = any(abs(t - p) < step / 2 for p in (2.75, 4.95))  # the caller's VAD saw a pause
        result = stabilizer.update(fake_hypothesis(t, stabilizer.committed_end), t, pause=pause)
        committed += [(w, t) for w in result.committed]
        tentatives.append(result.tentative)
        if result.segment_end:
            segment_ends.append((t, committed[-1][0].text))
        t = round(t + step, 6)
    return committed, tentatives, segment_ends


def test_commits_every_word_once_in_order():
    committed, _, _ = run_stream()
    assert [normalize_word(w.text) for w, _ in committed] == [normalize_word(w.text) for w in TRUTH]


def test_committed_words_are_never_repeated_or_revised():
    committed, _, _ = run_stream()
    texts = [w.text for w, _ in committed]
    assert len(texts) == len(set(texts))
    ends = [w.end for w, _ in committed]
    assert ends == sorted(ends)


def test_a_word_needs_a_word_after_it_to_commit_by_agreement():
    s = Stabilizer()
    words = [Word("two", 0.0, 0.3)]
    assert s.update(words, 1.0).committed == ()
    assert s.update(words, 1.5).committed == ()  # agreed twice, but nothing heard after it
    result = s.update(words + [Word("blue", 1.1, 1.4)], 2.0)
    assert [w.text for w in result.committed] == ["two"]


def test_cut_words_are_never_committed():
    committed, _, _ = run_stream()
    assert not any(w.text.endswith("-") for w, _ in committed)


def test_tentative_tail_is_replaced_not_accumulated():
    _, tentatives, _ = run_stream()
    assert any(tentatives)
    for tail in tentatives:
        assert len(tail) <= 4  # never the whole history, only the unstable end
    assert tentatives[-1] == ()  # the final pause committed everything


def test_commit_times_follow_word_ends_closely():
    config = StabilizerConfig()
    committed, _, _ = run_stream(config)
    truth = {normalize_word(w.text): w for w in TRUTH}
    for word, when in committed:
        ref = truth[normalize_word(word.text)]
        assert abs(word.end - ref.end) < 0.05  # times come from the hypothesis
        # Agreement needs decodes `agree_gap_s` apart after the word is whole, plus the guards.
        assert when - ref.end <= config.agree_gap_s + config.edge_s + 2 * 0.25


def test_pause_commits_all_and_ends_the_segment():
    committed, _, segment_ends = run_stream()
    assert [text for _, text in segment_ends] == ["again.", "folders."]
    assert all(when <= 2.75 for w, when in committed if w.end < 2.5)  # the pause flushed the phrase
    assert segment_ends[0][0] <= 2.75


def test_sentence_end_closes_a_segment_without_a_pause():
    s = Stabilizer()
    words = [Word("Hello", 0.0, 0.4), Word("there.", 0.4, 0.8), Word("More", 1.2, 1.5)]
    s.update(words, 2.0)
    result = s.update(words, 2.5)
    assert [w.text for w in result.committed] == ["Hello", "there."]  # "More" waits a step
    assert result.segment_end
    assert s.update(words, 3.0).committed == ()  # nothing heard after "More" yet
    after = s.update(words, 3.6)  # old enough now: 1.5 <= 3.6 - max_tentative_s
    assert [w.text for w in after.committed] == ["More"]
    assert not after.segment_end


def test_agreement_needs_hypotheses_that_heard_different_audio():
    s = Stabilizer(StabilizerConfig(agree_gap_s=0.4, right_context=0))
    words = [Word("alpha", 0.0, 0.3)]
    s.update(words, 1.0)
    assert s.update(words, 1.2).committed == ()  # only 0.2 s more audio: too similar
    assert [w.text for w in s.update(words, 1.45).committed] == ["alpha"]


def test_old_words_commit_without_agreement():
    s = Stabilizer(StabilizerConfig(max_tentative_s=1.0))
    first = s.update([Word("alpha", 0.0, 0.5), Word("beta", 0.6, 1.0)], 1.2)
    assert first.committed == ()
    flipped = s.update([Word("alfa", 0.0, 0.5), Word("beta", 0.6, 1.0)], 1.6)
    assert [w.text for w in flipped.committed] == ["alfa"]  # old enough: 0.5 <= 1.6 - 1.0
    assert [w.text for w in flipped.tentative] == ["beta"]


def test_redecoded_committed_words_are_dropped_even_when_times_shift():
    s = Stabilizer(StabilizerConfig(right_context=0))
    words = [Word("one", 0.0, 0.3), Word("two", 0.3, 0.6)]
    s.update(words, 1.0)
    assert [w.text for w in s.update(words, 1.5).committed] == ["one", "two"]
    # The buffer still holds that audio; a re-decode shifts its times later by 0.2 s.
    again = s.update([Word("two", 0.5, 0.8), Word("three", 0.8, 1.1)], 2.0)
    assert [w.text for w in again.tentative] == ["three"]


def test_a_doubtful_word_waits_for_more_audio_before_agreement_commits_it():
    s = Stabilizer(StabilizerConfig(right_context=0, min_probability=0.5, doubtful_wait_s=1.0))
    words = [Word("sure", 0.0, 0.3, probability=0.9), Word("magic", 0.3, 0.7, probability=0.2),
             Word("before", 0.7, 1.0, probability=0.9)]
    s.update(words, 1.2)
    agreed = s.update(words, 1.45)
    assert [w.text for w in agreed.committed] == ["sure"]  # "magic" and all after it wait
    assert [w.text for w in agreed.tentative] == ["magic", "before"]
    # Heard again with 1 s of audio after it, the word the decoder settled on is final.
    s.update([Word("budget", 0.3, 0.7, probability=0.3), words[2]], 1.6)
    later = s.update([Word("budget", 0.3, 0.7, probability=0.4), words[2]], 1.85)
    assert [w.text for w in later.committed] == ["budget", "before"]


def test_doubt_counts_the_least_confident_of_the_agreeing_hypotheses():
    s = Stabilizer(StabilizerConfig(right_context=0, min_probability=0.5, doubtful_wait_s=1.0))
    s.update([Word("to", 0.0, 0.2, probability=0.1)], 0.6)
    # The newer decode is confident, the older one was not: still doubtful.
    assert s.update([Word("to", 0.0, 0.2, probability=0.9)], 0.85).committed == ()
    assert [w.text for w in s.update([Word("to", 0.0, 0.2, probability=0.9)], 1.1).committed] == ["to"]


def test_the_confidence_gate_can_be_switched_off():
    s = Stabilizer(StabilizerConfig(right_context=0, min_probability=0.0))
    s.update([Word("maybe", 0.0, 0.3, probability=0.05)], 0.6)
    assert [w.text for w in s.update([Word("maybe", 0.0, 0.3, probability=0.05)], 0.85).committed] == ["maybe"]


def test_a_pause_keeps_the_last_partial_when_the_final_decode_hears_nothing_new():
    s = Stabilizer(StabilizerConfig(right_context=0))
    s.update([Word("end", 0.0, 0.3), Word("of", 0.3, 0.45), Word("day?", 0.5, 0.8)], 0.9)
    result = s.update([], 0.85, pause=True)
    assert [w.text for w in result.committed] == ["end", "of", "day?"]
    assert result.segment_end
    assert s.update([], 2.0, pause=True).committed == ()  # and only once


def test_final_and_partial_words_lie_on_one_forward_timeline():
    # The aligner gave "and" no frames and started "maybe" before it ended.
    stabilizer = Stabilizer()
    words = [Word("cheese,", 4.38, 4.64), Word("and", 5.22, 5.22), Word("maybe", 5.16, 5.34), Word("a", 5.34, 5.58)]
    result = stabilizer.update(words, audio_end=6.0, pause=True)
    times = [(w.start, w.end) for w in result.committed]
    assert all(end - start >= 0.02 - 1e-9 for start, end in times)
    assert all(before[1] <= after[0] + 1e-9 for before, after in zip(times, times[1:]))
    later = stabilizer.update([Word("snack", 5.9, 5.9), Word("for", 5.95, 6.4)], audio_end=6.5)
    assert all(w.start >= stabilizer.committed_end for w in later.tentative)
