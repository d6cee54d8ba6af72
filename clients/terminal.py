"""Live captions in a terminal: the current partial redrawn in place, finals as timestamped lines.

It is: a renderer fed `ReceivedEvent`s by `clients/cli.py`. On a TTY the newest
`caption.partial` is drawn on the last line (carriage return + clear to end of line) and
replaced when the next arrives; each `caption.final` is printed as its own line,
`[mm:ss.mmm → mm:ss.mmm] text`. Anywhere else (a pipe, a file, CI logs) partials are skipped
so the output is only the finals. Interpretations print beside the captions, once each, when
they first arrive (partial or final): `[mm:ss.mmm] <kind> text`, lines joined by " / ".
Non-fatal server errors go to stderr as warnings.

It is not: the JSON output (`--json` prints events in `cli.py`), a subtitle writer, or a full-
screen UI; it never moves the cursor above the current line.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from typing import TextIO

from patchstream.clients.stream_client import ReceivedEvent
from patchstream.clients.subtitles import timestamp

CLEAR_LINE = "\r\x1b[K"  # back to column 0, erase to the end of the line (ANSI / VT100)
ELLIPSIS = "…"


def final_line(fields: dict) -> str:
    """`[mm:ss.mmm → mm:ss.mmm] text` for a `caption.final` event's fields."""
    start = timestamp(float(fields["start"]), with_hours=False)
    end = timestamp(float(fields["end"]), with_hours=False)
    return f"[{start} → {end}] {fields['text']}"


def interpretation_line(fields: dict) -> str:
    """`[mm:ss.mmm] <kind> text` for an interpretation event's fields (its lines joined by " / ")."""
    start = timestamp(float(fields["start"]), with_hours=False)
    text = " / ".join(line for line in str(fields.get("text", "")).splitlines() if line.strip())
    return f"[{start}] <{fields.get('kind')}> {text}"


def fit_width(text: str, columns: int) -> str:
    """The end of `text` that fits one terminal line.

    A partial that wraps onto a second line could no longer be erased by a carriage return, and
    the newest words are the interesting ones, so the head is cut.
    """
    limit = max(columns - 1, 1)  # the last column would make some terminals wrap early
    if len(text) <= limit:
        return text
    return ELLIPSIS + text[len(text) - limit + 1 :]


@dataclass(frozen=True)
class TerminalOptions:
    """Where and how to draw."""

    out: TextIO  # captions go here
    err: TextIO  # warnings go here
    live: bool  # True: redraw partials in place (a TTY); False: finals only


class TerminalRenderer:
    """Draws caption events; call `handle` per event and `close` once at the end."""

    def __init__(self, options: TerminalOptions):
        self._options = options
        self._partial_shown = False  # a partial occupies the current line
        self._interpretations_shown: set[str] = set()  # ids already printed (each prints once)

    @classmethod
    def for_stdout(cls) -> TerminalRenderer:
        """Live partials when stdout is a terminal, finals only otherwise."""
        return cls(TerminalOptions(out=sys.stdout, err=sys.stderr, live=sys.stdout.isatty()))

    def handle(self, received: ReceivedEvent) -> None:
        fields = received.fields
        if received.type == "caption.partial" and self._options.live:
            columns = shutil.get_terminal_size().columns
            self._write(CLEAR_LINE + fit_width(str(fields.get("text", "")), columns))
            self._partial_shown = bool(fields.get("text"))
        elif received.type == "caption.final":
            self._clear_partial()
            self._write(final_line(fields) + "\n")
        elif received.type in ("interpretation.partial", "interpretation.final"):
            if fields.get("interpretation_id") not in self._interpretations_shown:
                self._interpretations_shown.add(fields.get("interpretation_id"))
                self._clear_partial()
                self._write(interpretation_line(fields) + "\n")
        elif received.type == "error" and not fields.get("fatal"):
            # Fatal errors end the stream and are reported by the caller with the exit status.
            self._clear_partial()
            self._options.err.write(f"warning: {fields.get('code')}: {fields.get('message')}\n")
            self._options.err.flush()

    def close(self) -> None:
        """Leave the terminal on a clean line."""
        self._clear_partial()

    def _clear_partial(self) -> None:
        if self._partial_shown:
            self._write(CLEAR_LINE)
            self._partial_shown = False

    def _write(self, text: str) -> None:
        self._options.out.write(text)
        self._options.out.flush()
