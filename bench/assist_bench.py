"""Latency of agent assist events after the words they refer to, through the server.

    python -m patchstream.bench.assist_bench            # one ~70 s call, assist off then on
    python -m patchstream.bench.assist_bench --runs 3   # three calls of each, order alternating

It is: a benchmark (not a test). It speaks a support call with eSpeak NG (agent and customer
alternating, one voice, mono: the session has no channels yet), streams it through an
in-process server running Whisper tiny.en at real-time pace with the real websocket client,
once without `assist` (the baseline) and once with every assist option on, and prints:
- caption.final latency: receive time − media end of the caption's last word, both runs (does
  assist slow captions down?);
- each assist kind's latency: receive time − media end of the caption it reads (the caption's
  last word), p50/p95/max;
- how long an assist event trails its caption.final (the assist thread's queue and work);
- the summary: how long after the last caption.final it arrives (`stop` is sent right after the
  audio, so this is the end-of-call wait), and `ended` after it;
- the assist thread's cost per caption (sentiment + intent + keywords + summary embedding),
  measured offline on the same captions.
Times are on the client's clock against media time as a live capture would deliver it (see
`clients/stream_client.ReceivedEvent`). It is not: a test; numbers depend on the machine and
its load.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from patchstream.bench.transcript_metrics import percentile
from patchstream.clients import speech
from patchstream.clients.stream_client import ReceivedEvent, StreamOptions, stream_file
from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine, build_text_models
from patchstream.streaming.assist.assistant import CallAssistant
from patchstream.streaming.assist.config import parse_assist
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.protocol import CaptionFinal, WordTiming
from patchstream.streaming.server import Server

CALL = (
    "Thank you for calling Acme support, my name is Sam. How can I help you today?",
    "Hi, I was charged twice for my internet bill this month.",
    "I am sorry to hear that. Let me look at your billing history.",
    "This is really frustrating, it happened last month too.",
    "I understand. I will refund the second charge today.",
    "Thanks. Actually, I want to cancel my subscription as well.",
    "I can help with that. May I ask why you want to cancel?",
    "The service keeps dropping every evening and I am tired of it.",
    "I am sorry. Let me transfer you to our retention team.",
    "Fine, but I want to speak to a manager if this is not solved.",
    "Of course. Can I have a phone number to call you back?",
    "My phone number is 555-123-4567.",
    "Thank you. Is there anything else I can help you with?",
    "No, that is all. Thank you for your help.",
)
ASSIST = {
    "redact": True,
    "sentiment": True,
    "summary": True,
    "keywords": ["refund", "manager", "bill"],
    "intents": {
        "cancel": ["I want to cancel my subscription", "please close my account"],
        "billing": ["I was charged twice", "there is a problem with my bill"],
        "refund": ["I want a refund", "can I get my money back"],
        "supervisor": ["let me talk to your supervisor", "I want to speak to a manager"],
        "outage": ["my internet is not working", "the service keeps dropping"],
    },
}
ASSIST_KINDS = ("sentiment", "intent", "keyword")
PAUSE_S = 0.8  # between turns


def write_call(path: Path) -> float:
    """The call as a 16 kHz mono WAV; its duration in seconds."""
    audio = speech.build_script(CALL, pause_s=PAUSE_S)
    pcm = (np.clip(audio.samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(speech.SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return audio.duration


async def stream(server: Server, path: Path, assist: dict | None) -> list[ReceivedEvent]:
    events: list[ReceivedEvent] = []
    await stream_file(path, StreamOptions(url=server.url, assist=assist), events.append)
    return events


def fields(event: ReceivedEvent) -> dict:
    return event.event.fields


def latencies(events: list[ReceivedEvent], match) -> list[float]:
    """Receive time − media end, for the events `match` picks."""
    return [e.client_time_s - fields(e)["end"] for e in events if match(e)]


def row(name: str, values: list[float]) -> str:
    if not values:
        return f"| {name} | 0 | – | – | – |"
    return f"| {name} | {len(values)} | {percentile(values, 50):.2f} | {percentile(values, 95):.2f} | {max(values):.2f} |"


def trailing(events: list[ReceivedEvent]) -> list[float]:
    """How long each assist event of one session arrived after its caption.final."""
    finals = {fields(e)["caption_id"]: e.client_time_s for e in events if e.type == "caption.final"}
    return [
        e.client_time_s - finals[fields(e)["data"]["caption_id"]]
        for e in events
        if e.type == "interpretation.final" and fields(e)["kind"] in ASSIST_KINDS
    ]


def cost_per_caption_ms(events: list[ReceivedEvent]) -> float:
    """The assist thread's work for one caption, measured offline on this call's finals."""
    finals = [fields(e) for e in events if e.type == "caption.final"]
    assistant = CallAssistant(parse_assist(ASSIST), build_text_models())
    captions = [
        CaptionFinal(f["caption_id"], f["text"], f["start"], f["end"], tuple(WordTiming(**w) for w in f["words"]))
        for f in finals
    ]
    assistant.analyze(captions[0])  # the intent examples are embedded at the first analysis
    started = time.perf_counter()
    for caption in captions * 10:
        assistant.analyze(caption)
    return (time.perf_counter() - started) / (10 * len(captions)) * 1e3


async def run(runs: int) -> None:
    engine = await asyncio.get_running_loop().run_in_executor(None, build_engine, EngineChoice("whisper"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "call.wav"
        duration = write_call(path)
        print(f"call: {len(CALL)} turns, {duration:.1f} s of eSpeak NG speech, real-time pace, Whisper tiny.en")
        baseline: list[ReceivedEvent] = []
        assisted: list[list[ReceivedEvent]] = []
        async with Server(ServerConfig(port=0), engine) as server:
            for index in range(runs):
                if index % 2:  # alternate the order, so neither condition always runs second
                    assisted.append(await stream(server, path, ASSIST))
                    baseline += await stream(server, path, None)
                else:
                    baseline += await stream(server, path, None)
                    assisted.append(await stream(server, path, ASSIST))
    flat = [e for events in assisted for e in events]
    is_final = lambda e: e.type == "caption.final"  # noqa: E731
    print("\nlatency after the words' media end (s)\n")
    print("| events | n | p50 | p95 | max |\n|---|---|---|---|---|")
    print(row("caption.final, assist off (baseline)", latencies(baseline, is_final)))
    print(row("caption.final, assist on", latencies(flat, is_final)))
    for kind in ASSIST_KINDS:
        print(row(kind, latencies(flat, lambda e, k=kind: e.type == "interpretation.final" and fields(e)["kind"] == k)))
    print(row("assist event after its caption.final", [t for events in assisted for t in trailing(events)]))
    waits, ends = [], []
    for events in assisted:
        last_final = max(e.client_time_s for e in events if is_final(e))
        summary = next(e for e in events if e.type == "interpretation.final" and fields(e)["kind"] == "summary")
        ended = next(e for e in events if e.type == "ended")
        waits.append(summary.client_time_s - last_final)
        ends.append(ended.client_time_s - summary.client_time_s)
    print(row("summary after the last caption.final", waits))
    print(row("ended after the summary", ends))
    print(f"\nassist thread cost per caption: {cost_per_caption_ms(assisted[0]):.2f} ms (offline, same captions)")
    summary = next(fields(e) for e in assisted[0] if e.type == "interpretation.final" and fields(e)["kind"] == "summary")
    intents = [fields(e)["text"] for e in assisted[0] if e.type == "interpretation.final" and fields(e)["kind"] == "intent"]
    print(f"intents detected: {', '.join(intents)}\nsummary: {summary['text']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patchstream.bench.assist_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="calls streamed with and without assist (default %(default)s)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
