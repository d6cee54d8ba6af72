"""The caption hook: every caption of a session passes its `CaptionPostProcessor` before the
outbox — rewritten text is all the client ever gets, added events follow their final, `end()` comes
before `ended` — and multichannel finals reach it in media-time order."""

from __future__ import annotations

import json
import re
from dataclasses import replace

from patchstream.model.api import CaptionUpdate, EngineSpec, StepResult, Word
from patchstream.streaming.config import LimitsConfig
from patchstream.streaming.protocol import (
    CaptionFinal,
    CaptionPartial,
    CodedError,
    ErrorCode,
    InterpretationFinal,
    StartMessage,
    WordTiming,
    event_fields,
)
from patchstream.streaming.session_protocol import SessionProtocol

DIGITS = re.compile(r"\d")


class Redactor:
    """A test processor: digits become `#`, each final gets a `length` interpretation, the end a count."""

    def __init__(self, session_id: str, start: StartMessage):
        if start.assist is not None and start.assist.get("fail"):
            raise CodedError(ErrorCode.BAD_START, "assist options refused")
        self.session_id, self.finals = session_id, []

    def partial(self, caption: CaptionPartial) -> CaptionPartial:
        return replace(caption, text=DIGITS.sub("#", caption.text), stable_text=DIGITS.sub("#", caption.stable_text),
                       words=tuple(replace(w, text=DIGITS.sub("#", w.text)) for w in caption.words))

    def final(self, caption: CaptionFinal):
        self.finals.append(caption)
        redacted = replace(caption, text=DIGITS.sub("#", caption.text),
                           words=tuple(replace(w, text=DIGITS.sub("#", w.text)) for w in caption.words))
        note = InterpretationFinal(f"n{len(self.finals)}", "length", str(len(caption.words)), caption.start, caption.end,
                                   channel=caption.channel)
        return (redacted, note)

    def end(self):
        return (InterpretationFinal("summary", "summary", f"{len(self.finals)} finals", 0.0, 0.0),)


def session(start: dict, processors: list) -> SessionProtocol:
    def make(session_id, start_message):
        processor = Redactor(session_id, start_message)
        processors.append(processor)
        return processor

    protocol = SessionProtocol("s-test", EngineSpec("fake"), LimitsConfig(), 2.0, 0.0, post_processor=make)
    protocol.receive_text(json.dumps(start), 0.0)
    protocol.opened(0.0)
    return protocol


def drain(protocol: SessionProtocol) -> list[dict]:
    out = []
    while (event := protocol.next_event()) is not None:
        out.append(event_fields(event))
    return out


def words(*items: tuple[str, float]) -> tuple[Word, ...]:
    return tuple(Word(text, start, start + 0.3) for text, start in items)


MONO = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 1}}
STEREO = {**MONO, "audio": {**MONO["audio"], "channels": 2}, "channels": ["agent", "customer"]}


def test_rewritten_captions_are_all_the_client_gets_and_end_comes_before_ended():
    processors = []
    protocol = session(MONO, processors)
    protocol.engine_result(StepResult(CaptionUpdate(committed=words(("card", 0.0)), tentative=words(("4111", 0.4)))))
    protocol.engine_result(StepResult(CaptionUpdate(committed=words(("4111.", 0.4)), processed_until=1.0)))
    protocol.receive_text('{"type":"stop"}', 1.0)
    protocol.finished(StepResult(CaptionUpdate(processed_until=1.0)))
    events = drain(protocol)
    assert "4111" not in json.dumps(events)
    assert [e["type"] for e in events] == [
        "ready", "caption.partial", "caption.final", "interpretation.final", "interpretation.final", "ended"
    ]
    assert events[2]["text"] == "card ####." and events[3]["text"] == "2"
    assert events[4]["text"] == "1 finals" and events[5]["captions"] == 1
    assert processors[0].finals[0].text == "card 4111."  # the processor saw the words as recognised


def test_multichannel_finals_reach_the_processor_in_media_time_order():
    processors = []
    protocol = session(STEREO, processors)
    # The customer's engine is slower: the agent's final (at 5 s) is held until the customer's
    # earlier final (at 2 s) is out.
    protocol.engine_result(StepResult(CaptionUpdate(committed=words(("Hello.", 5.0)), processed_until=9.0)), channel=0)
    assert [e["type"] for e in drain(protocol)][-1] == "ready"
    protocol.engine_result(StepResult(CaptionUpdate(committed=words(("Hi.", 2.0)), processed_until=9.0)), channel=1)
    finals = [e for e in drain(protocol) if e["type"] == "caption.final"]
    assert [(f["channel"], f["caption_id"]) for f in finals] == [("customer", "customer-c0"), ("agent", "agent-c0")]
    assert [f.start for f in processors[0].finals] == [2.0, 5.0]


def test_a_processor_may_refuse_the_session_at_start():
    protocol = session({**MONO, "assist": {"fail": True}}, [])
    events = drain(protocol)
    assert events[0]["code"] == "bad_start" and events[0]["fatal"] and events[-1]["type"] == "ended"


def test_channel_is_absent_from_single_channel_events():
    final = CaptionFinal("c0", "hi", 0.0, 0.3, (WordTiming("hi", 0.0, 0.3, True),))
    assert "channel" not in event_fields(final)
    assert event_fields(replace(final, channel="agent"))["channel"] == "agent"

