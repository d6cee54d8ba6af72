"""WebVTT/SRT writing from final captions: timestamps, wrapping, splitting, escaping, numbering."""

from __future__ import annotations

import re

from patchstream.clients.subtitles import (
    CUE_CHARS,
    LINE_CHARS,
    Cue,
    cues_from_final,
    cues_from_finals,
    timestamp,
    to_srt,
    to_webvtt,
    wrap_lines,
)

VTT_TIMING = re.compile(r"^\d{2,}:\d{2}:\d{2}\.\d{3} --> \d{2,}:\d{2}:\d{2}\.\d{3}$")
SRT_TIMING = re.compile(r"^\d{2,}:\d{2}:\d{2},\d{3} --> \d{2,}:\d{2}:\d{2},\d{3}$")


def final(text: str, start: float, end: float, words: list[dict] | None = None) -> dict:
    return {"type": "caption.final", "caption_id": "c0", "text": text, "start": start, "end": end,
            "words": words or []}


def timed_words(text: str, start: float, step: float) -> list[dict]:
    return [
        {"text": word, "start": start + i * step, "end": start + (i + 1) * step - 0.05, "stable": True}
        for i, word in enumerate(text.split())
    ]


def test_timestamps_use_each_formats_separator_and_round_to_milliseconds():
    assert timestamp(0) == "00:00:00.000"
    assert timestamp(3661.2345) == "01:01:01.234"
    assert timestamp(59.9996) == "00:01:00.000"  # rounding carries into the next unit
    assert timestamp(1.5, ",") == "00:00:01,500"
    assert timestamp(3725.5, with_hours=False) == "62:05.500"  # minutes keep counting
    assert timestamp(-0.2) == "00:00:00.000"


def test_short_text_stays_on_one_line():
    assert wrap_lines("Hello there.") == ["Hello there."]


def test_long_text_breaks_into_two_balanced_lines_within_the_limit():
    text = "The morning train was late again, so most of the office started work at ten."
    lines = wrap_lines(text)
    assert len(lines) == 2
    assert " ".join(lines) == text
    assert all(len(line) <= LINE_CHARS for line in lines)
    assert abs(len(lines[0]) - len(lines[1])) <= 12


def test_caption_longer_than_two_lines_is_split_into_cues_timed_by_its_words():
    text = " ".join(f"word{i:02d}" for i in range(30))  # 209 characters
    cues = cues_from_final(final(text, 1.0, 16.0, timed_words(text, 1.0, 0.5)))
    assert len(cues) == 3
    assert " ".join(cue.text for cue in cues) == text
    assert all(len(cue.text) <= CUE_CHARS for cue in cues)
    assert cues[0].start == 1.0 and cues[-1].end == 16.0
    assert cues[1].start == 1.0 + 0.5 * len(cues[0].text.split())  # the first word's own start
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:]))


def test_split_without_word_timings_shares_time_by_characters():
    text = " ".join(["abcdefghi"] * 20)
    cues = cues_from_final(final(text, 0.0, 10.0))
    assert len(cues) == 3
    assert cues[0].start == 0.0 and cues[-1].end == 10.0
    assert all(a.end == b.start for a, b in zip(cues, cues[1:]))


def test_zero_length_caption_still_ends_after_it_starts():
    (cue,) = cues_from_final(final("Hi.", 2.0, 2.0))
    assert cue.end > cue.start


def test_empty_caption_makes_no_cue():
    assert cues_from_final(final("  ", 1.0, 2.0)) == []


def test_webvtt_has_header_blank_line_separated_cues_and_escapes_markup():
    cues = [Cue(0.5, 1.75, "Fish & chips <b>now</b>"), Cue(2.0, 3.0, "a --> b")]
    text = to_webvtt(cues)
    blocks = text.rstrip("\n").split("\n\n")
    assert blocks[0] == "WEBVTT"
    assert blocks[1].splitlines() == [
        "00:00:00.500 --> 00:00:01.750",
        "Fish &amp; chips &lt;b&gt;now&lt;/b&gt;",
    ]
    assert blocks[2].splitlines()[1] == "a --&gt; b"
    assert all(VTT_TIMING.match(block.splitlines()[0]) for block in blocks[1:])


def test_webvtt_of_no_cues_is_just_the_header():
    assert to_webvtt([]) == "WEBVTT\n"


def test_srt_numbers_cues_from_one_and_wraps_lines():
    long_text = "Please bring two blue folders and a pencil to the meeting on Thursday."
    finals = [final("First.", 0.0, 1.0), final(long_text, 1.2, 4.0)]
    text = to_srt(cues_from_finals(finals))
    blocks = text.rstrip("\n").split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == ["1", "2"]
    assert all(SRT_TIMING.match(block.splitlines()[1]) for block in blocks)
    assert blocks[1].splitlines()[1] == "00:00:01,200 --> 00:00:04,000"
    assert len(blocks[1].splitlines()[2:]) == 2
    assert "&amp;" not in to_srt([Cue(0, 1, "a & b")])  # SRT is plain text: no escaping


def test_words_that_do_not_spell_the_text_are_ignored_for_timing():
    words = timed_words("something else entirely", 0.0, 0.2)
    (cue,) = cues_from_final(final("The real text.", 0.0, 1.0, words))
    assert cue.text == "The real text." and (cue.start, cue.end) == (0.0, 1.0)
