"""Sans-I/O caption policy: engine updates → partial and final caption events with stable ids.

The engine decides which words are committed; this module decides how committed words group
into captions a person reads: a caption closes at the end of a sentence, at a pause, or when it
grows past what fits on two caption lines. It takes `CaptionUpdate`s and returns events; it never
sees the network or the model. An engine's interpretation updates need no grouping: they become
`interpretation.partial` / `interpretation.final` events one to one (`interpretation_event`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from patchstream.model.api import SENTENCE_END, CaptionUpdate, InterpretationUpdate, Word
from patchstream.streaming.protocol import CaptionFinal, CaptionPartial, InterpretationFinal, InterpretationPartial, WordTiming


@dataclass(frozen=True)
class CaptionPolicyConfig:
    """How words group into captions."""

    max_chars: int = 84  # two lines of 42 characters, the usual broadcast caption block
    pause_s: float = 1.0  # a silence this long between committed words starts a new caption
    interim_results: bool = True  # emit partials; finals are always emitted
    channel: str | None = None  # the channel this policy captions (multichannel): in every event and id


def _join(words: list[Word]) -> str:
    return " ".join(word.text for word in words)


def _timings(words: list[Word], stable: bool) -> list[WordTiming]:
    return [WordTiming(w.text, w.start, w.end, stable, round(w.probability, 3)) for w in words]


@dataclass
class CaptionPolicy:
    """Per-session caption state. Feed it every engine update in order."""

    config: CaptionPolicyConfig = field(default_factory=CaptionPolicyConfig)
    _next_id: int = 0
    _committed: list[Word] = field(default_factory=list)  # words of the open caption, final
    _tentative: list[Word] = field(default_factory=list)  # the engine's current unstable tail
    _last_partial_text: str = ""
    finals_emitted: int = 0  # captions closed so far (the `ended` event reports it)

    def update(self, update: CaptionUpdate) -> list[CaptionPartial | CaptionFinal]:
        """Apply one engine update; return the events to send, finals first."""
        events: list[CaptionPartial | CaptionFinal] = []
        for word in update.committed:
            events.extend(self._close_before(word))
            self._committed.append(word)
            if word.text.endswith(SENTENCE_END):
                events.extend(self._close())
        self._tentative = list(update.tentative)
        if update.segment_end and not self._tentative:
            events.extend(self._close())
        partial = self._partial()
        if partial is not None:
            events.append(partial)
        return events

    def finish(self, update: CaptionUpdate) -> list[CaptionPartial | CaptionFinal]:
        """The stream ended: apply the engine's last update and close whatever is open."""
        events = [event for event in self.update(update) if isinstance(event, CaptionFinal)]
        self._tentative = []
        events.extend(self._close())
        return events

    def _close_before(self, word: Word) -> list[CaptionFinal]:
        if not self._committed:
            return []
        paused = word.start - self._committed[-1].end >= self.config.pause_s
        too_long = len(_join(self._committed)) + 1 + len(word.text) > self.config.max_chars
        return self._close() if paused or too_long else []

    @property
    def open_start(self) -> float | None:
        """Media time of the first word of the open caption (committed or tentative); None when none is open."""
        words = self._committed or self._tentative
        return words[0].start if words else None

    @property
    def tentative_start(self) -> float | None:
        """Media time of the first tentative word; None when every word heard is committed."""
        return self._tentative[0].start if self._tentative else None

    def _caption_id(self) -> str:
        # Ids stay unique across the channels of one session: the outbox coalesces partials by id.
        prefix = f"{self.config.channel}-" if self.config.channel is not None else ""
        return f"{prefix}c{self._next_id}"

    def _close(self) -> list[CaptionFinal]:
        if not self._committed:
            return []
        words = self._committed
        final = CaptionFinal(
            caption_id=self._caption_id(),
            text=_join(words),
            start=words[0].start,
            end=words[-1].end,
            words=tuple(_timings(words, stable=True)),
            channel=self.config.channel,
        )
        self._next_id += 1
        self._committed = []
        self._last_partial_text = ""
        self.finals_emitted += 1
        return [final]

    def _partial(self) -> CaptionPartial | None:
        words = self._committed + self._tentative
        if not self.config.interim_results or not words:
            return None
        text = _join(words)
        if text == self._last_partial_text:
            return None
        self._last_partial_text = text
        return CaptionPartial(
            caption_id=self._caption_id(),
            text=text,
            stable_text=_join(self._committed),
            start=words[0].start,
            end=words[-1].end,
            words=tuple(_timings(self._committed, True) + _timings(self._tentative, False)),
            channel=self.config.channel,
        )


def interpretation_event(
    update: InterpretationUpdate, channel: str | None = None
) -> InterpretationPartial | InterpretationFinal:
    """The wire event of one interpretation update (from the engine session of `channel`)."""
    event = InterpretationFinal if update.final else InterpretationPartial
    return event(
        interpretation_id=update.interpretation_id,
        kind=update.kind,
        text=update.text,
        start=update.start,
        end=update.end,
        frame_times=update.frame_times,
        channel=channel,
    )
