"""Agent assist end to end: eSpeak speech of a short call (an intent, a phone number, a social
security number, an email address, an angry complaint) streamed over the real websocket server
running Whisper tiny.en, with `assist` in `start`. It checks what reaches the client and the
logs: no caption (partial or final, text or words) and no log line shows the numbers or the
address; the intent, sentiment and keyword events arrive on their captions' spans; the summary
comes after the last final and before `ended`. Slow: a real model over ~25 s of speech."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import re

import numpy as np
import pytest
from websockets.asyncio.client import connect

from patchstream.clients import speech
from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.server import Server

pytestmark = [
    pytest.mark.slow,
    # Found, not imported: importing wordllama configures the root logger (model/text_models.py).
    pytest.mark.skipif(
        not all(importlib.util.find_spec(name) for name in ("wordllama", "vaderSentiment")), reason="needs the assist extra"
    ),
    pytest.mark.timeout(180),
    pytest.mark.skipif(not speech.espeak_available(), reason="needs eSpeak NG"),
]

# Digits and addresses last: tiny.en sometimes loses its way on eSpeak's digits, and what it then
# writes (or drops) must not decide whether the intent and sentiment checks can run.
SCRIPT = (
    "Hello, thank you for calling. How can I help you today?",
    "I want to cancel my subscription, it is far too expensive.",
    "This is terrible service and I am very angry.",
    "My phone number is 555-123-4567.",
    "My social security number is 123-45-6789.",
    "My email is jane@gmail.com.",
)
PII_DIGITS = ("5551234567", "123456789")  # what the captions must never show 6 digits of in a row
PII_WORDS = ("gmail", "jane", ".com")
SHOWN_DIGITS = 6  # an unfinished number shows at most 5 digits (redact.OPEN_RUN_DIGITS)
ASSIST = {
    "redact": True,
    "sentiment": True,
    "summary": True,
    "intents": {"cancel": ["I want to cancel my subscription", "please close my account"]},
    "keywords": ["expensive"],
}
START = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 1}, "assist": ASSIST}
FRAME_BYTES = 6_400  # 200 ms of 16 kHz s16 mono


def leaks(text: str) -> list[str]:
    """The PII of the script that `text` shows."""
    digits = re.sub(r"\D", "", text)
    found = [p for p in PII_DIGITS for i in range(len(p) - SHOWN_DIGITS + 1) if p[i:i + SHOWN_DIGITS] in digits]
    return found + [word for word in PII_WORDS if word in text.lower()]


async def call() -> list[dict]:
    audio = speech.build_script(SCRIPT, pause_s=1.2)
    pcm = (np.clip(audio.samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    async with Server(ServerConfig(port=0), build_engine(EngineChoice("whisper"))) as server:
        async with connect(server.url) as ws:
            await ws.send(json.dumps(START))
            for offset in range(0, len(pcm), FRAME_BYTES):
                await ws.send(pcm[offset:offset + FRAME_BYTES])
                await asyncio.sleep(0.01)  # faster than real time, slow enough for partials
            await ws.send(json.dumps({"type": "stop"}))
            return [json.loads(message) async for message in ws]


def test_a_call_is_redacted_analysed_and_summarised(caplog):
    caplog.set_level(logging.DEBUG)
    events = asyncio.run(call())
    types = [e["type"] for e in events]
    finals = [e for e in events if e["type"] == "caption.final"]
    captions = [e for e in events if e["type"].startswith("caption.")]
    assist = [e for e in events if e["type"] == "interpretation.final"]
    transcript = " | ".join(f["text"] for f in finals)

    # Nothing the client sees shows the numbers or the address, yet the captions marked them.
    for caption in captions:
        shown = caption["text"] + " " + " ".join(word["text"] for word in caption["words"])
        assert not leaks(shown), (caption, transcript)
    assert not [e for e in assist if leaks(e["text"])], assist
    assert re.search(r"\[(phone|number)\]", transcript) and re.search(r"\[(ssn|phone|number)\]", transcript), transcript
    # Nor does the log (the server's, the engine's, the websocket library's at DEBUG).
    assert not leaks(caplog.text), [line for line in caplog.text.splitlines() if leaks(line)]

    # One sentiment per final, on its span; the complaint reads negative.
    sentiments = [e for e in assist if e["kind"] == "sentiment"]
    by_caption = {e["data"]["caption_id"]: e for e in sentiments}
    assert set(by_caption) == {f["caption_id"] for f in finals}
    for final in finals:
        assert (by_caption[final["caption_id"]]["start"], by_caption[final["caption_id"]]["end"]) == (final["start"], final["end"])
    angry = [f for f in finals if "angry" in f["text"].lower()]
    assert angry and by_caption[angry[0]["caption_id"]]["text"] == "negative", transcript

    # The intent and the keyword, on the caption that said them.
    (intent,) = [e for e in assist if e["kind"] == "intent"]
    said = next(f for f in finals if f["caption_id"] == intent["data"]["caption_id"])
    assert intent["text"] == "cancel" and "cancel" in said["text"].lower() and intent["data"]["score"] >= 0.4
    assert [e["text"] for e in assist if e["kind"] == "keyword"] == ["expensive"]

    # The summary after every final and before `ended`, naming the intent.
    (summary,) = [e for e in assist if e["kind"] == "summary"]
    assert types.index("interpretation.final", events.index(summary)) == events.index(summary)
    assert events.index(summary) > max(events.index(f) for f in finals) and types[-1] == "ended"
    assert summary["data"]["intents"] == ["cancel"] and "cancel" in summary["text"]
    assert events[-1]["reason"] == "stop" and "error" not in types
