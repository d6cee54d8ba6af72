"""One call-center call in real time: caption latency per channel, multichannel against separate streams.

    python -m patchstream.bench.call_bench                 # the default call (4 turns, ~40 s), both runs
    python -m patchstream.bench.call_bench --cores 2       # pin the process to two cores first
    python -m patchstream.bench.call_bench --show-text     # the finals as they arrived

It is: a benchmark (not a test). It builds a two-party call from the development speech set
(`../shared/speech`): the agent and the customer take turns on their own channels of a stereo
stream, 1.5 s of silence between turns. It streams that call at real-time pace through an
in-process server on the CPU Whisper engine, as one native multichannel session
(`"channels": ["agent", "customer"]`), and, as the baseline in the same run, as two separate mono
sessions streamed side by side (each party's channel alone: no merge, nothing held back for
ordering). Per channel it prints WER, word latency at the client (first seen, and final: the
word shown committed), each p50/p95 of (receive time − the word's end in the audio, from
`align.json` shifted to its turn), the number of finals and how many arrived out of media-time
order (within the channel, and across both as they arrived), the delay of each `caption.final`
after its last word's end (what holding finals for media-time order adds), and the model thread's
real-time factor.

To extend it (agent assist's event latency, say): add a `Column` to `COLUMNS`; each column gets the
channel's `ChannelRun` (its label, reference words with their times in the call, and every event
the client received with its arrival time) and returns a cell.
It is not: an evaluation; timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from websockets.asyncio.client import connect

from patchstream.bench import speech_set
from patchstream.bench.latency import ServerRun, on_server, sightings, table
from patchstream.bench.transcript_metrics import (
    Latencies,
    TimedWord,
    normalize_words,
    percentile,
    timed_reference,
    word_errors,
    word_latencies,
)
from patchstream.clients.stream_client import ReceivedEvent
from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.protocol import parse_event

RATE = 16_000
GAP_S = 1.5  # silence between turns (and before the first)
SEND_S = 0.1  # audio per websocket message, sent every SEND_S of wall time
LABELS = ("agent", "customer")
# (file, channel) in turn order: two clean readers, the agent on channel 0.
DEFAULT_TURNS = (
    ("arctic_aew_a0001.wav", 0),
    ("ls_1272-128104-0000.wav", 1),
    ("ls_2412-153948-0000.wav", 0),
    ("ls_1995-1837-0001.wav", 1),
)


@dataclass
class ChannelRun:
    """What one channel of one run produced, for the columns."""

    label: str  # "agent" / "customer"
    reference: tuple[TimedWord, ...]  # its words with their times in the call
    reference_text: str  # its turns' references joined
    events: list[ReceivedEvent] = field(default_factory=list)  # what the client received for it, in order

    @property
    def finals(self) -> list[dict]:
        return [e.fields for e in self.events if e.type == "caption.final"]

    def latencies(self) -> Latencies:
        hypothesis = normalize_words(" ".join(f["text"] for f in self.finals))
        return word_latencies(self.reference, hypothesis, sightings(self.events))


@dataclass(frozen=True)
class Column:
    """One column of the per-channel table."""

    name: str
    cell: Callable[[ChannelRun], str]


def _p(values: Sequence[float]) -> str:
    return f"{percentile(values, 50):.2f} / {percentile(values, 95):.2f}"


def _final_delays(run: ChannelRun) -> list[float]:
    """Per `caption.final`: its arrival − its last word's end (what ordering the channels may add)."""
    return [e.client_time_s - e.fields["end"] for e in run.events if e.type == "caption.final"]


def _out_of_order(run: ChannelRun) -> int:
    starts = [f["start"] for f in run.finals]
    return sum(1 for a, b in zip(starts, starts[1:]) if b < a)


COLUMNS: list[Column] = [
    Column("channel", lambda run: run.label),
    Column("WER", lambda run: f"{word_errors(normalize_words(run.reference_text), normalize_words(' '.join(f['text'] for f in run.finals))).wer:.3f}"),
    Column("first seen p50/p95 s", lambda run: _p(run.latencies().first_seen)),
    Column("final p50/p95 s", lambda run: _p(run.latencies().final)),
    Column("caption.final after its end p50/p95 s", lambda run: _p(_final_delays(run))),
    Column("finals", lambda run: str(len(run.finals))),
    Column("out of order", lambda run: str(_out_of_order(run))),
]


@dataclass(frozen=True)
class Call:
    """A built call: the stereo audio and what each channel says when."""

    audio: np.ndarray  # float32 (2, n), 16 kHz
    references: tuple[tuple[TimedWord, ...], ...]  # per channel
    texts: tuple[str, ...]  # per channel, the turns' references joined


def build_call(files: dict[str, speech_set.SpeechFile], turns: Sequence[tuple[str, int]]) -> Call:
    gap = int(GAP_S * RATE)
    pieces, words, ends, texts = [np.zeros((2, gap), np.float32)], ([], []), ([], []), ([], [])
    at = gap / RATE
    for name, channel in turns:
        file = files[name]
        speech = speech_set.read_samples(file.path)
        block = np.zeros((2, len(speech) + gap), np.float32)
        block[channel, : len(speech)] = speech
        pieces.append(block)
        words[channel].extend(file.words)
        ends[channel].extend(end + at for end in file.ends)
        texts[channel].append(file.reference)
        at += block.shape[1] / RATE
    return Call(
        np.concatenate(pieces, axis=1),
        tuple(timed_reference(words[c], ends[c]) for c in range(2)),
        tuple(" ".join(texts[c]) for c in range(2)),
    )


async def stream(url: str, start: dict, pcm: bytes, bytes_per_second: int, on_event: Callable[[ReceivedEvent], None]) -> None:
    """Send `pcm` at real-time pace after `ready`, then `stop`; every event to `on_event` with its
    arrival on the media clock (0 = when `ready` arrived and audio began to flow)."""
    async with connect(url) as ws:
        await ws.send(json.dumps(start))
        ready = parse_event(await ws.recv())
        origin = time.monotonic()

        async def receive() -> None:
            async for message in ws:
                event = parse_event(message)
                on_event(ReceivedEvent(event, time.monotonic() - origin, time.time()))
                if event.type == "ended":
                    return

        receiver = asyncio.create_task(receive())
        step = int(SEND_S * bytes_per_second) // 4 * 4
        for index, offset in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(0.0, origin + index * SEND_S - time.monotonic()))
            await ws.send(pcm[offset : offset + step])
        await ws.send(json.dumps({"type": "stop"}))
        await receiver
        assert ready.type == "ready", ready


def s16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def multichannel_run(server, call: Call) -> list[ChannelRun]:
    runs = [ChannelRun(LABELS[c], call.references[c], call.texts[c]) for c in range(2)]
    start = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": RATE, "channels": 2}, "channels": list(LABELS)}

    def route(received: ReceivedEvent) -> None:
        channel = received.fields.get("channel")
        if channel in LABELS:
            runs[LABELS.index(channel)].events.append(received)

    await stream(f"ws://127.0.0.1:{server.port}/v1/stream", start, s16(call.audio.T.reshape(-1)), RATE * 4, route)
    return runs


async def separate_run(server, call: Call) -> list[ChannelRun]:
    runs = [ChannelRun(LABELS[c], call.references[c], call.texts[c]) for c in range(2)]
    start = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": RATE, "channels": 1}}
    url = f"ws://127.0.0.1:{server.port}/v1/stream"
    await asyncio.gather(*(
        stream(url, start, s16(call.audio[c]), RATE * 2, runs[c].events.append) for c in range(2)
    ))
    return runs


def report(title: str, runs: list[ChannelRun], server_run: ServerRun, audio_s: float, show_text: bool) -> str:
    rows = [[column.cell(run) for column in COLUMNS] for run in runs]
    arrivals = sorted((e.client_time_s, e.fields["start"]) for run in runs for e in run.events if e.type == "caption.final")
    crossed = sum(1 for (_, a), (_, b) in zip(arrivals, arrivals[1:]) if b < a)
    lines = [f"## {title}  (real-time factor {server_run.busy_s / audio_s:.2f}, mean batch {server_run.mean_batch:.2f},"
             f" finals of both channels out of media-time order as they arrived: {crossed})",
             table(rows, [column.name for column in COLUMNS])]
    if show_text:
        for run in runs:
            lines += [f"{run.label}: [{f['start']:.1f}-{f['end']:.1f}] {f['text']}" for f in run.finals]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech-dir", default=None, help="the speech set (default: ../shared/speech)")
    parser.add_argument("--cores", type=int, default=0, help="pin the process to this many cores first (0: as is)")
    parser.add_argument("--skip-baseline", action="store_true", help="only the multichannel run")
    parser.add_argument("--show-text", action="store_true", help="print the finals")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    files = {f.name: f for f in speech_set.load_speech_set(args.speech_dir)}
    call = build_call(files, DEFAULT_TURNS)
    audio_s = call.audio.shape[1] / RATE
    engine = build_engine(EngineChoice("whisper"))
    print(f"# one stereo call, {audio_s:.1f} s, real time, whisper tiny.en, {cores} cores")
    runs, server_run = asyncio.run(on_server(engine, lambda server: multichannel_run(server, call)))
    print(report("multichannel session (agent/customer in one stream)", runs, server_run, audio_s, args.show_text))
    if not args.skip_baseline:
        runs, server_run = asyncio.run(on_server(engine, lambda server: separate_run(server, call)))
        print(report("baseline: two separate mono sessions", runs, server_run, audio_s, args.show_text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
