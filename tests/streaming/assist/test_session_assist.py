"""Agent assist inside the sans-I/O session: captions are redacted before they are queued, each
final's analysis is handed to the shell as work for the assist thread, the summary comes before
`ended`, and a failing assist costs only an `assist_failed` error."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from websockets.asyncio.client import connect

from patchstream.model.api import CaptionUpdate, EngineChoice, EngineSpec, StepResult, TextModels, Word
from patchstream.model.engines import build_engine
from patchstream.streaming.assist.config import AssistConfig
from patchstream.streaming.assist.service import AssistService
from patchstream.streaming.config import LimitsConfig, ServerConfig
from patchstream.streaming.server import Server
from patchstream.streaming.session_protocol import Assist, Close, FinishMedia, SessionProtocol

AUDIO = {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 1}
STOP = json.dumps({"type": "stop"})


class FixedSentiment:
    name = "fixed"

    def polarity(self, text: str) -> float:
        if "fail" in text:
            raise RuntimeError("sentiment exploded")
        return -0.6 if "angry" in text else 0.0


def asked(assist, base: AssistConfig = AssistConfig()) -> SessionProtocol:
    """A session whose `start` carried `assist`, on a server with a sentiment model but no embedder."""
    service = AssistService(base, TextModels(None, FixedSentiment(), "no wordllama here"), ThreadPoolExecutor(1))
    protocol = SessionProtocol("s-test", EngineSpec("fake"), LimitsConfig(), 2.0, 0.0, assist=service.open)
    start = {"type": "start", "audio": AUDIO, "stats": False}
    if assist is not None:
        start["assist"] = assist
    protocol.receive_text(json.dumps(start), 0.0)
    return protocol


def protocol_with(assist, base: AssistConfig = AssistConfig()) -> SessionProtocol:
    """A started session (its `ready` read)."""
    protocol = asked(assist, base)
    protocol.opened(0.0)
    assert protocol.next_event().type == "ready"
    return protocol


def drain(protocol) -> list[dict]:
    events = []
    while (event := protocol.next_event()) is not None:
        events.append({key: value for key, value in vars(event).items() if value is not None})
    return events


def words(text: str, start: float = 0.0) -> tuple[Word, ...]:
    return tuple(Word(w, start + i * 0.3, start + i * 0.3 + 0.25) for i, w in enumerate(text.split()))


def run(actions) -> list:
    """The shell's part: run each assist work item (here, inline) and return them."""
    return [action for action in actions if isinstance(action, Assist)]


def test_partials_and_finals_are_redacted_before_they_are_queued():
    protocol = protocol_with({"redact": True})
    protocol.engine_result(StepResult(CaptionUpdate(committed=words("My number is"), tentative=words("555-123-4567 okay", 0.9))))
    protocol.engine_result(StepResult(CaptionUpdate(committed=words("555-123-4567 okay.", 0.9))))
    events = drain(protocol)
    partial, final = events[-2], events[-1]
    assert (partial["type"], partial["text"], partial["stable_text"]) == ("caption.partial", "My number is [phone] okay", "My number is")
    assert (final["type"], final["text"]) == ("caption.final", "My number is [phone] okay.")
    assert "555" not in json.dumps([{k: v for k, v in e.items()} for e in events], default=str)


def test_redaction_only_needs_no_assist_thread_and_ends_at_once():
    protocol = protocol_with({"redact": ["phone"]})
    assert run(protocol.engine_result(StepResult(CaptionUpdate(committed=words("Call 555-123-4567."))))) == []
    assert protocol.receive_text(STOP, 1.0) == [FinishMedia()]
    assert protocol.finished(StepResult(CaptionUpdate())) == [Close()]


def test_each_final_is_analysed_off_the_loop_and_the_summary_waits_for_ended():
    protocol = protocol_with({"sentiment": True, "redact": True, "keywords": ["refund"]})
    (work,) = run(protocol.engine_result(StepResult(CaptionUpdate(committed=words("I am angry, refund 555-123-4567 now.")))))
    assert [e["type"] for e in drain(protocol)] == ["caption.final"]  # the analysis is not done yet
    assert protocol.assisted(work.work()) == []
    sentiment, keyword = drain(protocol)
    assert (sentiment["kind"], sentiment["text"], sentiment["data"]) == ("sentiment", "negative", {"caption_id": "c0", "score": -0.6})
    assert (keyword["kind"], keyword["text"], keyword["start"], keyword["end"]) == ("keyword", "refund", 0.0, 1.75)
    protocol.receive_text(STOP, 1.0)
    (summary,) = run(protocol.finished(StepResult(CaptionUpdate())))
    assert summary.last and drain(protocol) == []  # no `ended` before the summary
    assert protocol.assisted(summary.work(), last=True) == [Close()]
    assert [e["type"] for e in drain(protocol)] == ["ended"]


def test_an_assist_failure_is_reported_once_and_the_session_goes_on():
    protocol = protocol_with({"sentiment": True})
    (work,) = run(protocol.engine_result(StepResult(CaptionUpdate(committed=words("This will fail.")))))
    drain(protocol)
    with pytest.raises(RuntimeError) as caught:
        work.work()
    assert protocol.assist_failed(caught.value) == []
    (error,) = drain(protocol)
    assert (error["code"], error["fatal"]) == ("assist_failed", False)
    assert "fail" not in error["message"].lower().replace("assist failed", "")  # no caption text in messages
    assert run(protocol.engine_result(StepResult(CaptionUpdate(committed=words("Later words."))))) == []  # analyses stop
    protocol.receive_text(STOP, 1.0)
    assert protocol.finished(StepResult(CaptionUpdate())) == [Close()]


@pytest.mark.parametrize(
    "assist, message",
    [
        ({"redact": ["dna"]}, "unknown kinds"),
        ({"intents": {"cancel": ["I want to cancel"]}}, "no wordllama here"),
        ("please", "`assist` must be true"),
    ],
)
def test_an_assist_option_the_server_cannot_serve_is_bad_start(assist, message):
    protocol = asked(assist)
    events = drain(protocol)
    assert [(e["type"], e.get("code")) for e in events] == [("error", "bad_start"), ("ended", None)]
    assert message in events[0]["message"]


def test_the_servers_redaction_applies_to_sessions_that_ask_for_nothing():
    protocol = protocol_with(None, base=AssistConfig(redact=frozenset({"card"})))
    protocol.engine_result(StepResult(CaptionUpdate(committed=words("Card 4111 1111 1111 1111."))))
    assert drain(protocol)[-1]["text"] == "Card [card]."


def test_a_session_without_an_assist_service_refuses_the_option():
    protocol = SessionProtocol("s-test", EngineSpec("fake"), LimitsConfig(), 2.0, 0.0)
    protocol.receive_text(json.dumps({"type": "start", "audio": AUDIO, "assist": True}), 0.0)
    assert drain(protocol)[0]["message"] == "this server offers no agent assist"


# --- over the real server (fake engine): threads and isolation -------------------------------


class RecordingSentiment:
    """Remembers the thread each call ran on; raises for sessions whose words it is told to."""

    name = "recording"

    def __init__(self):
        self.threads: set[str] = set()

    def polarity(self, text: str) -> float:
        self.threads.add(threading.current_thread().name)
        raise RuntimeError("this model is broken")


def bursts(count: int) -> bytes:
    """`count` 0.3 s tone bursts 0.5 s apart: the fake engine's words w0, w1, ..."""
    rate = 16_000
    t = np.arange(int(0.3 * rate)) / rate
    burst = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    silence = bytes(2 * int(0.5 * rate))
    return (burst + silence) * count


async def session_events(url: str, assist: dict) -> list[dict]:
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "start", "audio": AUDIO, "stats": False, "assist": assist}))
        pcm = bursts(4)
        for offset in range(0, len(pcm), 3_200):
            await ws.send(pcm[offset:offset + 3_200])
        await ws.send(STOP)
        return [json.loads(message) async for message in ws]


async def test_assist_runs_on_its_thread_and_a_failure_stays_in_its_session():
    sentiment = RecordingSentiment()
    models = TextModels(None, sentiment, "no embedder in this test")
    async with Server(ServerConfig(port=0), build_engine(EngineChoice("fake")), text_models=models) as server:
        failing, healthy = await asyncio.gather(
            session_events(server.url, {"sentiment": True}),
            session_events(server.url, {"keywords": ["w1"], "redact": True}),
        )
    assert sentiment.threads and all(name.startswith("assist") for name in sentiment.threads)
    errors = [e for e in failing if e["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [("assist_failed", False)]
    assert failing[-1] == {**failing[-1], "type": "ended", "reason": "stop"}
    assert len([e for e in failing if e["type"] == "caption.final"]) >= 2  # captions went on
    assert not [e for e in healthy if e["type"] == "error"] and healthy[-1]["reason"] == "stop"
    assert [e["text"] for e in healthy if e["type"] == "interpretation.final"] == ["w1"]
