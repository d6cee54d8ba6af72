"""The caption policy groups committed words into captions with stable ids."""

from patchstream.model.api import CaptionUpdate, Word
from patchstream.streaming.protocol import CaptionFinal, CaptionPartial
from patchstream.streaming.policy import CaptionPolicy, CaptionPolicyConfig


def w(text, start, end=None):
    return Word(text, start, end if end is not None else start + 0.3)


def test_partial_shows_stable_prefix_then_tentative_words():
    policy = CaptionPolicy()
    events = policy.update(CaptionUpdate(committed=(w("Hello", 0.0),), tentative=(w("wor", 0.4),)))
    assert len(events) == 1 and isinstance(events[0], CaptionPartial)
    partial = events[0]
    assert (partial.caption_id, partial.text, partial.stable_text) == ("c0", "Hello wor", "Hello")
    assert [word.stable for word in partial.words] == [True, False]


def test_tentative_tail_is_replaced_not_appended():
    policy = CaptionPolicy()
    policy.update(CaptionUpdate(tentative=(w("wor", 0.0),)))
    events = policy.update(CaptionUpdate(tentative=(w("world", 0.0),)))
    assert events[-1].text == "world"


def test_sentence_end_closes_caption_and_next_caption_gets_next_id():
    policy = CaptionPolicy()
    events = policy.update(
        CaptionUpdate(committed=(w("Hi", 0.0), w("there.", 0.3), w("How", 0.7)), tentative=(w("are", 1.0),))
    )
    finals = [e for e in events if isinstance(e, CaptionFinal)]
    partials = [e for e in events if isinstance(e, CaptionPartial)]
    assert [f.text for f in finals] == ["Hi there."]
    assert finals[0].caption_id == "c0" and (finals[0].start, finals[0].end) == (0.0, 0.6)
    assert partials[-1].caption_id == "c1" and partials[-1].text == "How are"


def test_pause_between_words_starts_a_new_caption():
    policy = CaptionPolicy(CaptionPolicyConfig(pause_s=1.0))
    policy.update(CaptionUpdate(committed=(w("one", 0.0),)))
    events = policy.update(CaptionUpdate(committed=(w("two", 2.0),)))
    assert [e.text for e in events if isinstance(e, CaptionFinal)] == ["one"]


def test_long_caption_splits_before_exceeding_two_lines():
    policy = CaptionPolicy(CaptionPolicyConfig(max_chars=20))
    words = tuple(w(f"word{i}", i * 0.3) for i in range(10))
    events = policy.update(CaptionUpdate(committed=words))
    finals = [e for e in events if isinstance(e, CaptionFinal)]
    assert finals and all(len(f.text) <= 20 for f in finals)
    all_final_words = [x.text for f in finals for x in f.words]
    assert all_final_words == [x.text for x in words[: len(all_final_words)]]


def test_segment_end_without_tentative_closes_caption():
    policy = CaptionPolicy()
    events = policy.update(CaptionUpdate(committed=(w("okay", 0.0),), segment_end=True))
    assert [e.text for e in events if isinstance(e, CaptionFinal)] == ["okay"]


def test_finish_closes_open_caption_and_drops_partials():
    policy = CaptionPolicy()
    policy.update(CaptionUpdate(committed=(w("almost", 0.0),), tentative=(w("done", 0.4),)))
    events = policy.finish(CaptionUpdate(committed=(w("done", 0.4),)))
    assert all(isinstance(e, CaptionFinal) for e in events)
    assert [e.text for e in events] == ["almost done"]
    assert policy.finals_emitted == 1


def test_no_partials_when_interim_results_off():
    policy = CaptionPolicy(CaptionPolicyConfig(interim_results=False))
    assert policy.update(CaptionUpdate(tentative=(w("x", 0.0),))) == []


def test_identical_partials_are_not_repeated():
    policy = CaptionPolicy()
    update = CaptionUpdate(tentative=(w("same", 0.0),))
    assert policy.update(update)
    assert policy.update(update) == []
