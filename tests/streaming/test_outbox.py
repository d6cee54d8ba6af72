"""The outbox coalesces partials and stats and never drops finals."""

import pytest

from patchstream.streaming.protocol import CaptionFinal, CaptionPartial, Stats
from patchstream.streaming.outbox import Outbox, OutboxOverflow


def partial(cid, text):
    return CaptionPartial(cid, text, "", 0.0, 1.0, ())


def final(cid, text):
    return CaptionFinal(cid, text, 0.0, 1.0, ())


def test_partials_of_one_caption_coalesce_in_place():
    box = Outbox(max_pending=10)
    box.put(partial("c0", "a"))
    box.put(final("c9", "x"))
    box.put(partial("c0", "a b"))
    assert len(box) == 2 and box.coalesced == 1
    assert box.pop().text == "a b"
    assert box.pop().text == "x"


def test_stats_keep_only_newest():
    box = Outbox(max_pending=10)
    box.put(Stats(1, 1, 0, 0, 0, 0))
    box.put(Stats(2, 2, 0, 0, 0, 0))
    assert len(box) == 1 and box.pop().audio_received_s == 2


def test_finals_are_never_dropped_but_bounded():
    box = Outbox(max_pending=3)
    for i in range(3):
        box.put(final(f"c{i}", str(i)))
    with pytest.raises(OutboxOverflow):
        box.put(final("c3", "3"))
    assert [box.pop().text for _ in range(3)] == ["0", "1", "2"]
    box.put(final("c3", "3"))  # room again once the client reads
