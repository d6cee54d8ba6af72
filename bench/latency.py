"""Caption latency, accuracy and cost of the live engine, measured at the client through the server.

    python -m patchstream.bench.latency                      # ~2.5 min of synthesized speech, all runs
    python -m patchstream.bench.latency --files 2 --sentences 6 --skip-naive   # a quicker look

It is: a benchmark (not a test) that synthesizes English speech with eSpeak NG (reference text and
word end times come from the synthesizer), streams every file through an in-process server at
real-time pace with the real websocket client, and prints per file and overall:
- WER of the final captions against the reference, and the same model's offline whole-file WER;
- real-time factor (model-thread busy time / audio time);
- caption latency at the client: first-seen (the word appears in any event) and final (the word
  is committed, `stable`), each p50/p95 of (receive time − the word's end in the audio);
- the naive baseline (re-transcribe the growing buffer every second) in the same run;
- four concurrent real-time streams: lag at the start and end of the run, and final p95.
It is not: a test; timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np

from patchstream.clients.speech import Speech, TimedWord, corpus_script, normalize_text
from patchstream.clients.stream_client import ReceivedEvent, StreamOptions, stream_file, write_wav
from patchstream.bench.engine_probe import parse_knobs
from patchstream.model.api import Engine, EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.server import Server

MATCH_SLACK_S = 0.6  # a hypothesis word counts as a reference word if its times are this close


@dataclass
class RunMetrics:
    """One file streamed through one engine."""

    name: str
    audio_s: float
    text: str  # the final captions joined
    wer: float
    first_seen: list[float] = field(default_factory=list)  # latency per matched word, seconds
    final: list[float] = field(default_factory=list)
    lags: list[tuple[float, float]] = field(default_factory=list)  # (client time, lag_s) from stats
    missing_first_seen: int = 0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def word_appearances(events: list[ReceivedEvent]) -> tuple[list, list]:
    """Every (client time, word) seen in any caption event, and those seen as stable."""
    seen, stable = [], []
    for received in events:
        if received.type not in ("caption.partial", "caption.final"):
            continue
        for word in received.fields["words"]:
            item = (received.client_time_s, normalize_text(word["text"]), word["start"], word["end"])
            seen.append(item)
            if word["stable"]:
                stable.append(item)
    return seen, stable


def first_time(appearances: list, ref: TimedWord) -> float | None:
    """When a word with the reference's text and roughly its times first appeared."""
    text = normalize_text(ref.text)
    for client_time, word, start, end in appearances:  # in arrival order
        if word == text and start <= ref.end + MATCH_SLACK_S and end >= ref.start - MATCH_SLACK_S:
            return client_time
    return None


def final_text(events: list[ReceivedEvent]) -> str:
    return " ".join(e.fields["text"] for e in events if e.type == "caption.final")


def measure(name: str, speech: Speech, events: list[ReceivedEvent]) -> RunMetrics:
    text = final_text(events)
    hypothesis = normalize_text(text)
    reference = normalize_text(speech.text)
    metrics = RunMetrics(name, speech.duration, text, jiwer.wer(reference, hypothesis) if hypothesis else 1.0)
    seen, stable = word_appearances(events)
    # Only reference words the final captions got right are timed (a wrong word has no latency).
    ref_words = [w for w in speech.words if normalize_text(w.text)]
    hyp_tokens = hypothesis.split()
    matcher = difflib.SequenceMatcher(a=[normalize_text(w.text) for w in ref_words], b=hyp_tokens, autojunk=False)
    for block in matcher.get_matching_blocks():
        for ref in ref_words[block.a : block.a + block.size]:
            committed = first_time(stable, ref)
            if committed is None:
                continue
            metrics.final.append(committed - ref.end)
            shown = first_time(seen, ref)
            if shown is None:
                metrics.missing_first_seen += 1
            else:
                metrics.first_seen.append(shown - ref.end)
    metrics.lags = [(e.client_time_s, e.fields["lag_s"]) for e in events if e.type == "stats"]
    return metrics


async def stream_one(url: str, path: Path) -> list[ReceivedEvent]:
    events: list[ReceivedEvent] = []
    await stream_file(path, StreamOptions(url=url), events.append)
    return events


async def run_engine(engine: Engine, label: str, files: list[tuple[Path, Speech]], concurrent: bool):
    """Stream the files (one after another, or all at once) through a fresh server on `engine`."""
    async with Server(ServerConfig(port=0), engine) as server:
        busy_before = server.scheduler.busy_s
        started = time.perf_counter()
        if concurrent:
            results = await asyncio.gather(*(stream_one(server.url, path) for path, _ in files))
        else:
            results = [await stream_one(server.url, path) for path, _ in files]
        wall = time.perf_counter() - started
        busy = server.scheduler.busy_s - busy_before
        mean_batch = server.scheduler.batched_sessions / max(1, server.scheduler.steps_run)
    metrics = [measure(f"{label}:{path.stem}", speech, events) for (path, speech), events in zip(files, results)]
    audio = sum(speech.duration for _, speech in files)
    return metrics, busy / audio, wall, mean_batch


def lag_trend(metrics: RunMetrics) -> tuple[float, float]:
    """Mean lag over the first and the last third of the stream."""
    lags = [lag for _, lag in metrics.lags]
    if len(lags) < 3:
        return float("nan"), float("nan")
    third = len(lags) // 3
    return statistics.fmean(lags[:third]), statistics.fmean(lags[-third:])


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def latency_row(name: str, audio: float, wer: float, offline: float | None, rtf: float | None, runs: list[RunMetrics]):
    first = [x for m in runs for x in m.first_seen]
    final = [x for m in runs for x in m.final]
    fmt = lambda v: f"{v:.2f}"  # noqa: E731
    return [
        name, f"{audio:.0f}", f"{wer:.3f}", "" if offline is None else f"{offline:.3f}",
        "" if rtf is None else f"{rtf:.2f}",
        fmt(percentile(first, 50)), fmt(percentile(first, 95)),
        fmt(percentile(final, 50)), fmt(percentile(final, 95)), str(len(final)),
    ]


HEADER = ["run", "audio s", "WER", "offline WER", "RTF", "first p50", "first p95", "final p50", "final p95", "words"]


def overall_wer(files: list[tuple[Path, Speech]], texts: list[str]) -> float:
    return jiwer.wer([normalize_text(s.text) for _, s in files], [normalize_text(t) or "-" for t in texts])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patchstream.bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3, help="number of speech files")
    parser.add_argument("--sentences", type=int, default=10, help="sentences per file (~5 s each)")
    parser.add_argument("--concurrency", type=int, default=4, help="streams in the concurrent run (0 skips it)")
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("knobs", nargs="*", help="whisper engine settings as NAME=VALUE (see patchstream.bench.engine_probe)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="patchstream-bench-"))
    files = []
    for index in range(max(args.files, args.concurrency)):
        speech = corpus_script(args.sentences, first=index * args.sentences)
        path = workdir / f"speech{index}.wav"
        write_wav(path, speech.samples)
        files.append((path, speech))
    serial_files = files[: args.files]
    audio_total = sum(s.duration for _, s in serial_files)
    print(f"# {len(serial_files)} files, {audio_total:.0f} s of eSpeak NG speech in {workdir}", flush=True)

    engine = build_engine(EngineChoice("whisper", options=parse_knobs(args.knobs)))
    offline_texts = [" ".join(w.text for w in engine.transcribe_offline(s.samples)) for _, s in serial_files]
    offline_wer = {path.stem: jiwer.wer(normalize_text(s.text), normalize_text(t)) for (path, s), t in zip(serial_files, offline_texts)}

    rows = []
    streaming, rtf, _, _ = asyncio.run(run_engine(engine, "streaming", serial_files, concurrent=False))
    for m, (path, _) in zip(streaming, serial_files):
        rows.append(latency_row(m.name, m.audio_s, m.wer, offline_wer[path.stem], None, [m]))
    stream_wer = overall_wer(serial_files, [m.text for m in streaming])
    rows.append(latency_row("streaming: all", audio_total, stream_wer, overall_wer(serial_files, offline_texts), rtf, streaming))

    if not args.skip_naive:
        from patchstream.bench.naive_engine import NaiveRetranscribeEngine  # noqa: PLC0415

        naive, naive_rtf, _, _ = asyncio.run(run_engine(NaiveRetranscribeEngine(), "naive", serial_files, concurrent=False))
        rows.append(latency_row("naive baseline: all", audio_total, overall_wer(serial_files, [m.text for m in naive]),
                                None, naive_rtf, naive))

    print(table(rows, HEADER), flush=True)

    if args.concurrency:
        chosen = files[: args.concurrency]
        runs, rtf, wall, mean_batch = asyncio.run(run_engine(engine, f"x{args.concurrency}", chosen, concurrent=True))
        lag_rows = []
        for m in runs:
            early, late = lag_trend(m)
            lag_rows.append(latency_row(m.name, m.audio_s, m.wer, None, None, [m]) + [f"{early:.2f}", f"{late:.2f}",
                            f"{max((lag for _, lag in m.lags), default=float('nan')):.2f}"])
        audio = sum(s.duration for _, s in chosen)
        lag_rows.append(latency_row(f"{args.concurrency} concurrent: all", audio,
                                    overall_wer(chosen, [m.text for m in runs]), None, rtf, runs) + ["", "", ""])
        print(f"\n# {args.concurrency} concurrent real-time streams (mean batch {mean_batch:.2f} sessions/step, wall {wall:.0f} s)")
        print(table(lag_rows, HEADER + ["lag early", "lag late", "lag max"]))
    print("\nlatency = client receive time − the word's end in the audio (eSpeak NG word events); seconds")
    print("command: python -m patchstream.bench.latency " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
