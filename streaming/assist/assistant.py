"""One session's agent assist: the post-processor every caption passes through.

It is: `CallAssistant`, built from the session's `AssistConfig` and the server's `TextModels`,
with three calls:
- `caption(event)`: a partial or final caption with its PII masked (text and words alike),
  per channel. Cheap (regular expressions over one caption), so the session calls it on the
  event loop right before it queues the caption: unredacted text never reaches the outbox.
- `analyze(final)`: the assist events of one final caption: `sentiment`, `intent`, `keyword`
  interpretation finals on the caption's media span and channel. It embeds text: the session
  runs it on the assist thread, never on the loop and never on the model thread.
- `summarize()`: one `summary` interpretation final per channel, at the end of the session
  (assist thread too).
Analyses see only redacted text, so no event, summary or log line can carry what redaction hid.

It is not: I/O, and not thread-safe across calls of one kind: the session calls `analyze` and
`summarize` one at a time, in caption order; `caption` touches only the redactors.
"""

from __future__ import annotations

from dataclasses import replace

from patchstream.model.api import TextModels
from patchstream.streaming.assist.config import AssistConfig
from patchstream.streaming.assist.intents import IntentMatcher, KeywordSpotter
from patchstream.streaming.assist.redact import Redactor
from patchstream.streaming.assist.summary import Utterance, pick, summary_text
from patchstream.streaming.protocol import CaptionFinal, CaptionPartial, InterpretationFinal

NEUTRAL_BAND = 0.05  # |polarity| below this is neutral (VADER's own convention)


def sentiment_label(polarity: float) -> str:
    if polarity >= NEUTRAL_BAND:
        return "positive"
    if polarity <= -NEUTRAL_BAND:
        return "negative"
    return "neutral"


def check_models(config: AssistConfig, models: TextModels) -> None:
    """Raise ValueError when the config asks for a model this server lacks."""
    if (config.needs_embedder and models.embedder is None) or (config.sentiment and models.sentiment is None):
        raise ValueError(f"this server cannot serve that assist option: {models.missing}")


class CallAssistant:
    """Redaction, analyses and the summary of one session."""

    def __init__(self, config: AssistConfig, models: TextModels):
        check_models(config, models)
        self.config = config
        self._models = models
        self._redactors: dict[str | None, Redactor] = {}  # per channel: a split number is judged per speaker
        self._matcher: IntentMatcher | None = None  # built on the assist thread at the first analysis
        self._spotter = KeywordSpotter(config.keywords)
        self._said: dict[str | None, list[Utterance]] = {}  # per channel, in order, for the summary
        self._next_id = 0

    # -- on the event loop -----------------------------------------------------------------------

    def caption(self, event: CaptionPartial | CaptionFinal) -> CaptionPartial | CaptionFinal:
        """The caption with its PII masked (the same event when nothing is asked or found)."""
        if not self.config.redact:
            return event
        channel = getattr(event, "channel", None)
        redactor = self._redactors.setdefault(channel, Redactor(self.config.redact))
        words = redactor.words(event.words, final=isinstance(event, CaptionFinal))
        if words == tuple(event.words):
            return event
        text = " ".join(word.text for word in words)
        if isinstance(event, CaptionFinal):
            return replace(event, text=text, words=words)
        stable = []
        for word in words:
            if not word.stable:
                break
            stable.append(word.text)
        return replace(event, text=text, stable_text=" ".join(stable), words=words)

    # -- on the assist thread --------------------------------------------------------------------

    def analyze(self, final: CaptionFinal) -> list[InterpretationFinal]:
        """The assist events of one (redacted) final caption."""
        config, text = self.config, final.text
        events: list[InterpretationFinal] = []
        polarity = None
        if config.sentiment:
            polarity = round(self._models.sentiment.polarity(text), 3)
            events.append(self._event("sentiment", sentiment_label(polarity), final, score=polarity))
        intent = None
        if config.intents:
            if self._matcher is None:
                self._matcher = IntentMatcher(config.intents, self._models.embedder, config.intent_threshold)
            match = self._matcher.match(text)
            if match is not None:
                intent = match.name
                events.append(self._event("intent", match.name, final, score=match.score, example=match.example))
        keywords = tuple(self._spotter.find(text))
        events += [self._event("keyword", keyword, final) for keyword in keywords]
        if config.summary:
            embedding = self._models.embedder.embed([text])[0]
            utterance = Utterance(final.caption_id, text, final.start, final.end, embedding, intent, keywords, polarity)
            self._said.setdefault(getattr(final, "channel", None), []).append(utterance)
        return events

    def summarize(self) -> list[InterpretationFinal]:
        """One `summary` per channel that spoke (one, channel-less, for a mono session)."""
        if not self.config.summary:
            return []
        events = []
        for channel, said in (self._said or {None: []}).items():
            kept = [said[i] for i in pick(said, self.config.summary_sentences)]
            intents = list(dict.fromkeys(u.intent for u in said if u.intent))
            keywords = list(dict.fromkeys(k for u in said for k in u.keywords))
            polarities = [u.sentiment for u in said if u.sentiment is not None]
            data = {
                "caption_ids": [u.caption_id for u in kept],
                "intents": intents,
                "keywords": keywords,
                "utterances": len(said),
            }
            if polarities:
                data["sentiment"] = round(sum(polarities) / len(polarities), 3)
            start = said[0].start if said else 0.0
            end = said[-1].end if said else 0.0
            events.append(self._new("summary", summary_text(kept, intents), start, end, channel, data))
        return events

    def _event(self, kind: str, text: str, final: CaptionFinal, **data) -> InterpretationFinal:
        data = {"caption_id": final.caption_id, **data}
        return self._new(kind, text, final.start, final.end, getattr(final, "channel", None), data)

    def _new(self, kind: str, text: str, start: float, end: float, channel: str | None, data: dict) -> InterpretationFinal:
        interpretation_id = f"a{self._next_id}"  # "a": assist ids never meet an engine's ("t3", "s2")
        self._next_id += 1
        return InterpretationFinal(interpretation_id, kind, text, start, end, channel=channel, data=data)
