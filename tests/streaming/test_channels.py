"""FinalsMerge: finals of several channels come out in media-time order, none is lost."""

from __future__ import annotations

from patchstream.streaming.channels import FinalsMerge
from patchstream.streaming.protocol import CaptionFinal


def final(caption_id: str, start: float, channel: str) -> CaptionFinal:
    return CaptionFinal(caption_id, caption_id, start, start + 1.0, (), channel=channel)


def test_a_final_waits_until_the_other_channel_is_past_its_start():
    merge = FinalsMerge(2)
    assert merge.add(0, [final("a0", 5.0, "agent")], watermark=9.0) == []  # customer might still speak at 2 s
    late = final("b0", 2.0, "customer")
    assert merge.add(1, [late], watermark=6.0) == [late, final("a0", 5.0, "agent")]
    assert merge.held == 0


def test_a_channel_with_an_open_caption_holds_later_finals_of_the_others():
    merge = FinalsMerge(2)
    assert merge.add(1, [], watermark=3.0) == []
    assert merge.add(0, [final("a0", 4.0, "agent")], watermark=10.0) == []
    assert [f.caption_id for f in merge.add(1, [final("b0", 3.0, "customer")], watermark=12.0)] == ["b0", "a0"]


def test_finishing_a_channel_releases_what_it_held_back():
    merge = FinalsMerge(3)
    assert merge.add(0, [final("a0", 1.0, "a")], watermark=5.0) == []
    assert merge.finish(1) == []  # channel 2 has promised nothing yet
    assert [f.caption_id for f in merge.finish(2)] == ["a0"]


def test_watermarks_never_move_back_and_flush_returns_everything_in_order():
    merge = FinalsMerge(2)
    merge.add(1, [], watermark=4.0)
    merge.add(1, [], watermark=1.0)  # a smaller promise later changes nothing
    assert [f.caption_id for f in merge.add(0, [final("a0", 3.0, "a")], watermark=0.0)] == ["a0"]
    merge.add(0, [final("a1", 9.0, "a"), final("a2", 8.5, "a")], watermark=0.0)
    assert [f.caption_id for f in merge.flush()] == ["a2", "a1"]
