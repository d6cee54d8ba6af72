"""Caption latency, accuracy and cost of the live engine on real speech, measured at the client
through the server.

    python -m patchstream.bench.latency                                   # the whole speech set, all runs
    python -m patchstream.bench.latency --files 3 --skip-naive --skip-concurrent   # a quick look
    python -m patchstream.bench.latency --condition noisy edge_s=0.3      # one condition, one engine knob
    python -m patchstream.bench.latency --only mfa_disfluent --show-text  # one file, its captions printed
    python -m patchstream.bench.latency --synthetic --files 2 --sentences 6       # eSpeak NG speech instead
    python -m patchstream.bench.latency --condition read --transports        # WebRTC's added latency

It is: a benchmark (not a test) that streams the development speech set (`../shared/speech`
beside the repository, or `--speech-dir`; see `bench/speech_set.py`) through an in-process server
at real-time pace with the real websocket client, one file after another, each file its own
session, and prints per file, per condition and overall:
- WER of the final captions against the reference with its insertions/deletions/substitutions,
  and the same model's offline whole-file WER in the same run;
- repeated phrases: 3+ words committed twice in a row where the reference does not say them twice;
- caption latency at the client: first-seen (the word appears in any event) and final (the word
  is committed, `stable`), each p50/p95 of (receive time − the word's end in the audio, from
  `align.json`);
- real-time factor (model-thread busy time / audio time);
- the naive baseline (re-transcribe the growing buffer every second) in the same run;
- four concurrent real-time streams (the files split into four lists of similar length, each
  list streamed file after file): lag early and late in each stream, and final p95.
`--transports` streams the same files over the websocket (PCM) and over WebRTC (an Opus track of
an aiortc peer connection, `--transport webrtc`), each on its own fresh server, and prints both
with the difference: what WebRTC adds (Opus coding, packetization, jitter buffer, resampling).
`--synthetic` runs the same measurements on eSpeak NG speech made on the spot (reference text and
word ends from the synthesizer), the secondary check the benchmark used before the speech set.
It is not: a test, nor an evaluation set; timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence, TypeVar

from patchstream.bench import speech_set
from patchstream.bench.engine_probe import parse_knobs
from patchstream.bench.speech_set import SpeechFile
from patchstream.bench.transcript_metrics import (
    NO_ERRORS,
    Latencies,
    Sighting,
    WordErrors,
    normalize_words,
    percentile,
    repeat_spans,
    repeated_phrases,
    timed_reference,
    word_errors,
    word_latencies,
)
from patchstream.clients.stream_client import ReceivedEvent, StreamOptions, stream_file
from patchstream.model.api import Engine, EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.server import Server

T = TypeVar("T")
SYNTHETIC_FILES = 3  # eSpeak files when --files is not given (~38 s each at 10 sentences)


@dataclass(frozen=True)
class FileResult:
    """One file streamed through one engine, measured at the client."""

    file: SpeechFile
    text: str  # the final captions joined
    errors: WordErrors  # of the final captions against the reference
    repeats: int  # repeated phrases in the final captions (see transcript_metrics.repeated_phrases)
    latencies: Latencies
    lags: tuple[float, ...]  # `lag_s` of each stats event, in arrival order
    busy_s: float | None  # model-thread seconds while this file streamed alone; None when shared


@dataclass(frozen=True)
class OfflineResult:
    """The same model decoding one whole file (faster-whisper long-form, VAD filter)."""

    text: str  # the words joined
    errors: WordErrors
    repeats: int


@dataclass(frozen=True)
class ServerRun:
    """What the server's scheduler reports about one run."""

    busy_s: float  # model-thread seconds spent in steps
    wall_s: float
    mean_batch: float  # sessions advanced per step


def sightings(events: Sequence[ReceivedEvent]) -> list[Sighting]:
    """Every normalized caption word of every caption event, in arrival order."""
    seen = []
    for received in events:
        if received.type not in ("caption.partial", "caption.final"):
            continue
        for word in received.fields["words"]:
            seen += [
                Sighting(received.client_time_s, text, word["start"], word["end"], word["stable"])
                for text in normalize_words(word["text"])
            ]
    return seen


def measure(file: SpeechFile, events: Sequence[ReceivedEvent], busy_s: float | None) -> FileResult:
    text = " ".join(e.fields["text"] for e in events if e.type == "caption.final")
    hypothesis, reference = normalize_words(text), normalize_words(file.reference)
    return FileResult(
        file=file,
        text=text,
        errors=word_errors(reference, hypothesis),
        repeats=repeated_phrases(hypothesis, reference),
        latencies=word_latencies(timed_reference(file.words, file.ends), hypothesis, sightings(events)),
        lags=tuple(e.fields["lag_s"] for e in events if e.type == "stats"),
        busy_s=busy_s,
    )


def offline(engine: Engine, file: SpeechFile) -> OfflineResult:
    text = " ".join(w.text for w in engine.transcribe_offline(speech_set.read_samples(file.path)))
    hypothesis, reference = normalize_words(text), normalize_words(file.reference)
    return OfflineResult(text, word_errors(reference, hypothesis), repeated_phrases(hypothesis, reference))


async def stream_one(url: str, file: SpeechFile, transport: str = "websocket") -> list[ReceivedEvent]:
    events: list[ReceivedEvent] = []
    await stream_file(file.path, StreamOptions(url=url, transport=transport), events.append)
    return events


def log(result: FileResult, label: str = "") -> None:
    """Progress on stderr; a file with repeated phrases shows its captions with them marked."""
    print(f"  {label}{result.file.name}: WER {result.errors.wer:.3f}, {result.repeats} repeats", file=sys.stderr, flush=True)
    if result.repeats:
        marked = marked_repeats(normalize_words(result.text), normalize_words(result.file.reference))
        print(f"    {marked}", file=sys.stderr, flush=True)


async def stream_serially(server: Server, files: Sequence[SpeechFile], transport: str = "websocket") -> list[FileResult]:
    """Each file its own session, one after another; model time is charged per file."""
    results = []
    for file in files:
        before = server.scheduler.busy_s
        events = await stream_one(server.url, file, transport)
        results.append(measure(file, events, server.scheduler.busy_s - before))
        log(results[-1])
    return results


async def stream_concurrently(server: Server, streams: Sequence[Sequence[SpeechFile]]) -> list[list[FileResult]]:
    """All streams at once; each streams its files one after another, each file its own session."""

    async def one_stream(index: int, files: Sequence[SpeechFile]) -> list[FileResult]:
        results = []
        for file in files:
            results.append(measure(file, await stream_one(server.url, file), None))
            log(results[-1], f"stream {index}: ")
        return results

    return list(await asyncio.gather(*(one_stream(i, files) for i, files in enumerate(streams))))


async def on_server(engine: Engine, work: Callable[[Server], Awaitable[T]]) -> tuple[T, ServerRun]:
    """Run `work` against a fresh in-process server on `engine`."""
    async with Server(ServerConfig(port=0), engine) as server:
        busy_before, started = server.scheduler.busy_s, time.perf_counter()
        result = await work(server)
        scheduler = server.scheduler
        run = ServerRun(scheduler.busy_s - busy_before, time.perf_counter() - started,
                        scheduler.batched_sessions / max(1, scheduler.steps_run))
    return result, run


def split_streams(files: Sequence[SpeechFile], count: int) -> list[list[SpeechFile]]:
    """`count` lists of similar total duration (longest file first into the shortest list), so
    the streams play different files at any moment; with fewer files than streams, files repeat."""
    if len(files) < count:
        return [[files[k % len(files)]] for k in range(count)]
    streams: list[list[SpeechFile]] = [[] for _ in range(count)]
    for file in sorted(files, key=lambda f: -f.duration_s):
        min(streams, key=lambda s: sum(f.duration_s for f in s)).append(file)
    return streams


def lag_trend(lags: Sequence[float]) -> tuple[float, float, float]:
    """Mean lag over the first and the last third of a stream's stats, and the largest."""
    if len(lags) < 3:
        return float("nan"), float("nan"), max(lags, default=float("nan"))
    third = len(lags) // 3
    return statistics.fmean(lags[:third]), statistics.fmean(lags[-third:]), max(lags)


METRICS_HEADER = ["files", "audio s", "WER", "offline WER", "ins", "del", "sub", "rep", "first p50",
                  "first p95", "final p50", "final p95", "RTF", "words"]


def metrics_row(results: Sequence[FileResult], offline_errors: WordErrors | None, busy_s: float | None = None) -> list[str]:
    """The METRICS_HEADER cells of a group of files; RTF from per-file model time unless given."""
    audio = sum(r.file.duration_s for r in results)
    errors = sum((r.errors for r in results), NO_ERRORS)
    first = [x for r in results for x in r.latencies.first_seen]
    final = [x for r in results for x in r.latencies.final]
    if busy_s is None and all(r.busy_s is not None for r in results):
        busy_s = sum(r.busy_s for r in results)
    fmt = lambda v: f"{v:.2f}"  # noqa: E731
    return [
        str(len(results)), f"{audio:.0f}", f"{errors.wer:.3f}",
        "" if offline_errors is None else f"{offline_errors.wer:.3f}",
        str(errors.insertions), str(errors.deletions), str(errors.substitutions),
        str(sum(r.repeats for r in results)),
        fmt(percentile(first, 50)), fmt(percentile(first, 95)), fmt(percentile(final, 50)), fmt(percentile(final, 95)),
        "" if busy_s is None else f"{busy_s / audio:.2f}", str(len(final)),
    ]


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def offline_sum(results: Sequence[FileResult], baseline: dict[str, OfflineResult]) -> WordErrors:
    return sum((baseline[r.file.name].errors for r in results), NO_ERRORS)


def serial_report(streaming: list[FileResult], baseline: dict[str, OfflineResult], naive: list[FileResult] | None) -> str:
    """Per-file and per-condition tables of the one-stream run (and the naive baseline's total)."""
    per_file = [[r.file.name.removesuffix(".wav"), r.file.condition, *metrics_row([r], baseline[r.file.name].errors)]
                for r in streaming]
    conditions = [c for c in speech_set.CONDITIONS if any(r.file.condition == c for r in streaming)]
    conditions += sorted({r.file.condition for r in streaming} - set(conditions))
    per_condition = []
    for condition in conditions:
        group = [r for r in streaming if r.file.condition == condition]
        per_condition.append([condition, *metrics_row(group, offline_sum(group, baseline))])
    per_condition.append(["all", *metrics_row(streaming, offline_sum(streaming, baseline))])
    offline_repeats = sum(baseline[r.file.name].repeats for r in streaming)
    if naive is not None:
        per_condition.append(["naive baseline: all", *metrics_row(naive, None)])
    return "\n\n".join([
        "## Per file (one real-time stream)", table(per_file, ["file", "condition", *METRICS_HEADER]),
        "## Per condition", table(per_condition, ["condition", *METRICS_HEADER]),
        f"offline (same model, whole files): WER {offline_sum(streaming, baseline).wer:.3f}, "
        f"{offline_repeats} repeated phrases",
    ])


def concurrent_report(streams: list[list[FileResult]], run: ServerRun) -> str:
    rows = []
    for index, results in enumerate(streams):
        early, late, peak = lag_trend([lag for r in results for lag in r.lags])
        rows.append([f"stream {index}", *metrics_row(results, None), f"{early:.2f}", f"{late:.2f}", f"{peak:.2f}"])
    everything = [r for results in streams for r in results]
    rows.append(["all", *metrics_row(everything, None, busy_s=run.busy_s), "", "", ""])
    return "\n\n".join([
        f"## {len(streams)} concurrent real-time streams (mean batch {run.mean_batch:.2f} sessions/step, wall {run.wall_s:.0f} s)",
        table(rows, ["stream", *METRICS_HEADER, "lag early", "lag late", "lag max"]),
    ])


def captions_report(results: Sequence[FileResult], baseline: dict[str, OfflineResult]) -> str:
    """Each file's final captions and offline text, normalized, repeated phrases in [brackets]."""
    lines = ["## Final captions (normalized; repeated phrases in [brackets])", ""]
    for result in results:
        reference = normalize_words(result.file.reference)
        lines.append(f"- {result.file.name}")
        for label, text in (("live", result.text), ("offline", baseline[result.file.name].text)):
            lines.append(f"  - {label}: {marked_repeats(normalize_words(text), reference)}")
    return "\n".join(lines)


def marked_repeats(words: list[str], reference: list[str]) -> str:
    for first, end in reversed(repeat_spans(words, reference)):
        words = words[:first] + ["[" + " ".join(words[first:end]) + "]"] + words[end:]
    return " ".join(words)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m patchstream.bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech-dir", type=Path, default=None,
                        help=f"a directory laid out like the speech set (default {speech_set.default_speech_dir()})")
    parser.add_argument("--files", type=int, default=None, help="only the first N files (after --only/--condition)")
    parser.add_argument("--only", metavar="PATTERN", help="only files whose name matches this glob or contains it")
    parser.add_argument("--condition", choices=speech_set.CONDITIONS, help="only files of this condition")
    parser.add_argument("--synthetic", action="store_true", help="eSpeak NG speech instead of the speech set")
    parser.add_argument("--sentences", type=int, default=10, help="with --synthetic: sentences per file (~4 s each)")
    parser.add_argument("--concurrency", type=int, default=4, help="streams in the concurrent run (0 skips it)")
    parser.add_argument("--skip-concurrent", action="store_true", help="skip the concurrent run")
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--skip-serial", action="store_true",
                        help="skip the one-stream run (and the offline baseline and naive run with it)")
    parser.add_argument("--show-text", action="store_true", help="print each file's final captions")
    parser.add_argument("--transports", action="store_true",
                        help="only compare the transports: the files over websocket, then over WebRTC")
    parser.add_argument("--model-path", help="a CTranslate2 Whisper directory (default: the bundled tiny.en)")
    parser.add_argument("knobs", nargs="*", help="whisper engine settings as NAME=VALUE (see patchstream.bench.engine_probe)")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Selection:
    """The files a run streams."""

    serial: list[SpeechFile]  # one after another, for the per-file and per-condition tables
    concurrent: list[SpeechFile]  # split among the concurrent streams
    source: str  # where they came from, for the heading


def choose_files(args: argparse.Namespace, concurrency: int) -> Selection:
    """The speech set filtered by the options, or fresh eSpeak NG files with --synthetic."""
    if args.synthetic:
        # Enough files for every concurrent stream to speak its own; the serial runs take the first.
        count = args.files or SYNTHETIC_FILES
        files = speech_set.synthetic_set(max(count, concurrency), args.sentences)
        return Selection(files[:count], files, f"eSpeak NG speech in {files[0].path.parent}")
    files = speech_set.select(speech_set.load_speech_set(args.speech_dir), args.files, args.only, args.condition)
    return Selection(files, files, f"real speech from {args.speech_dir or speech_set.default_speech_dir()}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    concurrency = 0 if args.skip_concurrent else args.concurrency
    try:
        chosen = choose_files(args, concurrency)
    except speech_set.SpeechSetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = chosen.serial
    if not files:
        print("error: no files match the selection", file=sys.stderr)
        return 2
    counts = ", ".join(f"{c} {n}" for c, n in Counter(f.condition for f in files).items())
    print(f"# {len(files)} files ({counts}), {sum(f.duration_s for f in files):.0f} s of {chosen.source}", flush=True)

    engine = build_engine(EngineChoice("whisper", model_path=args.model_path, options=parse_knobs(args.knobs)))
    if args.transports:
        transport_runs(engine, files)
        print("command: python -m patchstream.bench.latency " + " ".join(argv if argv is not None else sys.argv[1:]))
        return 0
    if not args.skip_serial:
        serial_runs(args, engine, files)
    if concurrency > 0:
        streams = split_streams(chosen.concurrent, concurrency)
        print(f"{concurrency} concurrent streams:", file=sys.stderr, flush=True)
        results, run = asyncio.run(on_server(engine, lambda server: stream_concurrently(server, streams)))
        print("\n" + concurrent_report(results, run), flush=True)

    reference_times = "eSpeak NG word events" if args.synthetic else "align.json"
    print(f"\nlatency = client receive time − the word's end in the audio ({reference_times}); seconds. "
          "rep = repeated phrases (3+ words twice in a row, not so in the reference)")
    print("command: python -m patchstream.bench.latency " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


def serial_runs(args: argparse.Namespace, engine: Engine, files: Sequence[SpeechFile]) -> None:
    """The offline baseline, one real-time stream, and the naive baseline; prints their report."""
    baseline = {f.name: offline(engine, f) for f in files}
    print("streaming, one file after another:", file=sys.stderr, flush=True)
    streaming, _ = asyncio.run(on_server(engine, lambda server: stream_serially(server, files)))
    naive = None
    if not args.skip_naive:
        from patchstream.bench.naive_engine import NaiveEngineConfig, NaiveRetranscribeEngine  # noqa: PLC0415

        print("naive baseline:", file=sys.stderr, flush=True)
        naive_engine = NaiveRetranscribeEngine(NaiveEngineConfig(model_path=args.model_path))
        naive, _ = asyncio.run(on_server(naive_engine, lambda server: stream_serially(server, files)))
    print("\n" + serial_report(streaming, baseline, naive), flush=True)
    if args.show_text:
        print("\n" + captions_report(streaming, baseline), flush=True)


TRANSPORT_HEADER = ["transport", "files", "audio s", "WER", "first p50", "first p95", "final p50", "final p95", "words"]


def transport_runs(engine: Engine, files: Sequence[SpeechFile]) -> None:
    """The same files over the websocket, then over WebRTC; both, and what WebRTC adds."""
    rows, medians = [], {}
    for transport in ("websocket", "webrtc"):
        print(f"{transport}, one file after another:", file=sys.stderr, flush=True)
        results, _ = asyncio.run(on_server(engine, lambda server: stream_serially(server, files, transport)))
        first = [x for r in results for x in r.latencies.first_seen]
        final = [x for r in results for x in r.latencies.final]
        errors = sum((r.errors for r in results), NO_ERRORS)
        cells = [percentile(first, 50), percentile(first, 95), percentile(final, 50), percentile(final, 95)]
        medians[transport] = cells
        rows.append([transport, str(len(results)), f"{sum(r.file.duration_s for r in results):.0f}", f"{errors.wer:.3f}",
                     *(f"{v:.2f}" for v in cells), str(len(final))])
    added = [w - s for w, s in zip(medians["webrtc"], medians["websocket"])]
    rows.append(["webrtc − websocket", "", "", "", *(f"{v:+.2f}" for v in added), ""])
    print("\n" + table(rows, TRANSPORT_HEADER), flush=True)
    print("\nlatency = client receive time − the word's end in the audio (align.json), seconds; media time 0 is "
          "the first sample sent (websocket: at `ready`; WebRTC: when the track starts, after ICE and DTLS)")


if __name__ == "__main__":
    raise SystemExit(main())
