"""WebVTT and SRT subtitle files from the `caption.final` events of a captioning session.

It is: pure functions from final captions (their event fields, as `parse_event` reads them) to
cues, and from cues to the text of a `.vtt` or `.srt` file, plus the one timestamp formatter the
clients share. Cues are wrapped at about 42 characters into at most two lines; a caption too long
for two lines is split into several cues at word boundaries, timed by its word timings.

It is not: a subtitle parser, a styling or positioning engine, or anything that does I/O; callers
write the returned text where they like. Partial captions never reach a subtitle file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

LINE_CHARS = 42  # the usual broadcast/Netflix line length for Latin scripts
MAX_LINES = 2  # more lines cover too much of the picture
CUE_CHARS = LINE_CHARS * MAX_LINES  # text one cue can show
MIN_CUE_S = 0.001  # a cue must end after it starts (WebVTT); engines may report zero-length words


@dataclass(frozen=True)
class Cue:
    """One subtitle: text shown between two media times."""

    start: float  # media seconds when the text appears
    end: float  # media seconds when it disappears; always > start
    text: str  # one paragraph of plain text, single-spaced, no line breaks yet


@dataclass(frozen=True)
class _TimedToken:
    text: str  # one word as displayed
    start: float | None  # media seconds, None when the caption carried no word timings
    end: float | None


def timestamp(seconds: float, decimal_sep: str = ".", with_hours: bool = True) -> str:
    """`HH:MM:SS.mmm` (WebVTT), `HH:MM:SS,mmm` (SRT) or `MM:SS.mmm` (terminal) for media seconds.

    Rounded to the millisecond; negative times clamp to zero. Without hours, minutes keep counting
    past 59 so long streams stay unambiguous.
    """
    total_ms = max(0, int(round(seconds * 1000)))
    total_s, ms = divmod(total_ms, 1000)
    minutes, secs = divmod(total_s, 60)
    if not with_hours:
        return f"{minutes:02d}:{secs:02d}{decimal_sep}{ms:03d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_sep}{ms:03d}"


def wrap_lines(text: str, width: int = LINE_CHARS) -> list[str]:
    """Break one cue's text into at most two lines, balanced, each ≤ `width` where possible.

    Two lines of similar length read faster than a full line over a stub, so the break goes at
    the space that makes the longer line shortest. Text over two lines' worth stays in two
    (longer) lines rather than being cut; `cues_from_final` keeps cues short enough.
    """
    words = text.split()
    joined = " ".join(words)
    if len(joined) <= width or len(words) < 2:
        return [joined] if joined else []
    best = min(
        range(1, len(words)),
        key=lambda i: max(len(" ".join(words[:i])), len(" ".join(words[i:]))),
    )
    return [" ".join(words[:best]), " ".join(words[best:])]


def _tokens(final: Mapping) -> list[_TimedToken]:
    words = final.get("words") or []
    timed = [
        _TimedToken(str(w["text"]).strip(), float(w["start"]), float(w["end"]))
        for w in words
        if isinstance(w, Mapping) and str(w.get("text", "")).strip()
    ]
    # Word timings are only usable when they spell the caption; otherwise the text is the truth.
    if timed and " ".join(t.text for t in timed).split() == str(final.get("text", "")).split():
        return timed
    return [_TimedToken(word, None, None) for word in str(final.get("text", "")).split()]


def _groups(tokens: list[_TimedToken], max_chars: int) -> list[list[_TimedToken]]:
    """Consecutive runs of tokens whose joined text fits `max_chars` (a lone long word still goes)."""
    groups: list[list[_TimedToken]] = []
    current: list[_TimedToken] = []
    length = 0
    for token in tokens:
        added = len(token.text) + (1 if current else 0)
        if current and length + added > max_chars:
            groups.append(current)
            current, length = [], 0
            added = len(token.text)
        current.append(token)
        length += added
    if current:
        groups.append(current)
    return groups


def cues_from_final(final: Mapping, max_chars: int = CUE_CHARS) -> list[Cue]:
    """The cue(s) for one `caption.final` event's fields.

    A caption longer than `max_chars` becomes several cues; each takes its times from its words
    when the caption has word timings, else a share of the caption's span by character count.
    """
    start, end = float(final["start"]), float(final["end"])
    groups = _groups(_tokens(final), max_chars)
    if not groups:
        return []
    total_chars = sum(len(t.text) for group in groups for t in group) or 1
    cues, cursor, chars_before = [], start, 0
    for index, group in enumerate(groups):
        chars_before += sum(len(t.text) for t in group)
        last = index == len(groups) - 1
        if group[0].start is not None and group[-1].end is not None:
            cue_start = start if index == 0 else group[0].start
            cue_end = end if last else group[-1].end
        else:
            cue_start = cursor
            cue_end = end if last else start + (end - start) * chars_before / total_chars
        cue_start = max(cue_start, cursor)  # cues of one caption never overlap each other
        text = " ".join(t.text for t in group)
        cues.append(Cue(cue_start, max(cue_end, cue_start + MIN_CUE_S), text))
        cursor = cues[-1].end
    return cues


def cues_from_finals(finals: Iterable[Mapping]) -> list[Cue]:
    """Cues for a whole session's `caption.final` events, in the order received."""
    return [cue for final in finals for cue in cues_from_final(final)]


def _escape_vtt(text: str) -> str:
    # `&` first, or the `&` of the other escapes would be escaped again. Escaping `>` also keeps
    # a literal "-->" from reading as a timing line.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_webvtt(cues: Sequence[Cue]) -> str:
    """The text of a `.vtt` file: the `WEBVTT` header, then one block per cue."""
    blocks = ["WEBVTT"]
    for cue in cues:
        lines = [_escape_vtt(line) for line in wrap_lines(cue.text)]
        blocks.append("\n".join([f"{timestamp(cue.start)} --> {timestamp(cue.end)}", *lines]))
    return "\n\n".join(blocks) + "\n"


def to_srt(cues: Sequence[Cue]) -> str:
    """The text of a `.srt` file: numbered blocks from 1, comma before the milliseconds."""
    blocks = []
    for number, cue in enumerate(cues, start=1):
        timing = f"{timestamp(cue.start, ',')} --> {timestamp(cue.end, ',')}"
        blocks.append("\n".join([str(number), timing, *wrap_lines(cue.text)]))
    return "\n\n".join(blocks) + "\n" if blocks else ""
