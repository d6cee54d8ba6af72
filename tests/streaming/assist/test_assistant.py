"""`CallAssistant` on captions that carry a channel label (the multichannel sessions of issue 12):
redaction state, assist events and summaries are kept per channel."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from patchstream.streaming.assist.assistant import CallAssistant, sentiment_label
from patchstream.streaming.assist.config import parse_assist
from patchstream.streaming.protocol import CaptionFinal, CaptionPartial, WordTiming


@dataclass(frozen=True)
class ChannelFinal(CaptionFinal):
    channel: str | None = None  # what the multichannel session layer adds to captions


def final(caption_id: str, text: str, start: float, channel: str | None = None) -> ChannelFinal:
    words = tuple(WordTiming(w, start + i * 0.3, start + i * 0.3 + 0.25, True) for i, w in enumerate(text.split()))
    return ChannelFinal(caption_id, text, words[0].start, words[-1].end, words, channel=channel)


def test_a_number_split_on_one_channel_is_not_joined_with_the_other(models):
    assistant = CallAssistant(parse_assist({"redact": True}), models)
    assert assistant.caption(final("c0", "my card is 4111 1111", 0.0, "customer")).text == "my card is [number]"
    assert assistant.caption(final("c1", "1111 1111 okay.", 2.0, "agent")).text == "[number] okay."  # 8 digits: an id
    assert assistant.caption(final("c2", "1111 1111.", 3.0, "customer")).text == "[card]."


def test_partials_keep_stable_text_a_prefix_of_text(models):
    assistant = CallAssistant(parse_assist({"redact": ["phone"]}), models)
    words = (
        WordTiming("call", 0.0, 0.2, True), WordTiming("555-123-4567", 0.3, 1.2, True), WordTiming("now", 1.3, 1.5, False),
    )
    partial = assistant.caption(CaptionPartial("c0", "call 555-123-4567 now", "call 555-123-4567", 0.0, 1.5, words))
    assert (partial.text, partial.stable_text) == ("call [phone] now", "call [phone]")


def test_events_and_summaries_are_per_channel(models):
    config = parse_assist({
        "sentiment": True, "summary": True, "keywords": ["refund"],
        "intents": {"refund": ["I want a refund", "can I get my money back"]},
    })
    assistant = CallAssistant(config, models)
    said = [
        final("c0", "Thank you for calling, how can I help you today?", 0.0, "agent"),
        final("c1", "I want my money back for the broken blender I bought.", 2.0, "customer"),
        final("c2", "I am sorry to hear that, I can issue a refund right away.", 5.0, "agent"),
        final("c3", "Great, thank you so much for your help.", 8.0, "customer"),
    ]
    events = [event for caption in said for event in assistant.analyze(caption)]
    assert {(e.kind, e.channel) for e in events} >= {("sentiment", "agent"), ("sentiment", "customer"), ("intent", "customer")}
    intents = [e for e in events if e.kind == "intent"]
    assert intents[0].data["caption_id"] == "c1" and intents[0].text == "refund"
    summaries = assistant.summarize()
    assert [s.channel for s in summaries] == ["agent", "customer"]
    customer = summaries[1]
    assert "money back" in customer.text and customer.data["intents"] == ["refund"]
    assert (customer.start, customer.end) == (said[1].start, said[3].end)
    assert len({e.interpretation_id for e in events + summaries}) == len(events) + len(summaries)


def test_sentiment_labels_use_vaders_neutral_band():
    assert [sentiment_label(p) for p in (-0.5, -0.04, 0.0, 0.04, 0.5)] == ["negative", "neutral", "neutral", "neutral", "positive"]


def test_a_session_with_no_speech_still_gets_its_summary(models):
    (summary,) = CallAssistant(parse_assist({"summary": True}), models).summarize()
    assert (summary.kind, summary.text, summary.channel, summary.data["utterances"]) == ("summary", "", None, 0)
