"""Soak: continuous real-time streams for a long time; memory and lag must stay flat.

    python -m patchstream.bench.soak --minutes 30            # the real soak (whisper tiny.en, 2 streams)
    python -m patchstream.bench.soak --minutes 3             # a short look
    python -m patchstream.bench.soak --minutes 1 --engine fake --streams 4

It is: a benchmark on loopback (an in-process server on 127.0.0.1, port 0). `--streams` clients
each stream speech files at real-time pace, one session per file, file after file, for
`--minutes`, so sessions open and close all the time (leaks show up) while the engine never
rests. Every `--sample-s` it records the process's resident memory (server and clients share the
process: both would show a leak) and the lag: the server's longest audio backlog and the
clients' last `stats.lag_s`. At the end it compares the first and last fifth of the run after
`--settle-s` (the first minute: the model's buffers and the decoder pools grow to their working
size then): RSS must grow less than `--max-rss-growth-mb` and the mean lag must not rise by more
than `--max-lag-rise-s`. Admission is off by default (`--admission` turns it on): the soak
measures the server under steady load, not refusals; a refused session is retried after its hint
and counted apart from errors.

It is not: a test; a run is minutes to hours long.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from patchstream.bench import speech_set
from patchstream.clients.stream_client import ClientError, ReceivedEvent, ServerError, StreamOptions, stream_file
from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.admission import AdmissionConfig
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.server import Server


@dataclass(frozen=True)
class Sample:
    at_s: float  # seconds since the soak began
    rss_mb: float  # resident memory of the process
    server_lag_s: float  # longest audio backlog waiting for the model
    client_lag_s: float  # mean of the streams' last `stats.lag_s`
    sessions: int  # finished so far


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Stream:
    """One client: file after file until the deadline."""

    def __init__(self, url: str, files: list[Path], offset: int):
        self.url, self.files, self.offset = url, files, offset
        self.lag_s = 0.0
        self.sessions = 0
        self.refused = 0  # server_busy at start (with --admission)
        self.errors: list[str] = []

    def on_event(self, received: ReceivedEvent) -> None:
        if received.type == "stats":
            self.lag_s = received.fields.get("lag_s", 0.0)

    async def run(self, deadline: float) -> None:
        index = self.offset
        while time.monotonic() < deadline:
            path = self.files[index % len(self.files)]
            index += 1
            try:
                await stream_file(path, StreamOptions(url=self.url), self.on_event)
                self.sessions += 1
            except ServerError as error:
                if error.code != "server_busy":
                    self.errors.append(str(error))
                self.refused += error.code == "server_busy"
                await asyncio.sleep(1.0)
            except ClientError as error:
                self.errors.append(str(error))
                await asyncio.sleep(1.0)


async def run(args: argparse.Namespace) -> int:
    files = [f.path for f in speech_set.load_speech_set(args.speech_dir) if 3.0 <= f.duration_s <= 60.0]
    engine = await asyncio.get_running_loop().run_in_executor(None, build_engine, EngineChoice(args.engine))
    samples: list[Sample] = []
    config = ServerConfig(host="127.0.0.1", port=0, admission=AdmissionConfig(enabled=args.admission))
    async with Server(config, engine) as server:
        begin = time.monotonic()
        deadline = begin + args.minutes * 60
        streams = [Stream(server.url, files, i * 7) for i in range(args.streams)]
        tasks = [asyncio.create_task(s.run(deadline)) for s in streams]
        while time.monotonic() < deadline:
            await asyncio.sleep(min(args.sample_s, max(0.0, deadline - time.monotonic())))
            samples.append(Sample(time.monotonic() - begin, rss_mb(), server.max_backlog_s(),
                                  statistics.fmean(s.lag_s for s in streams), sum(s.sessions for s in streams)))
            last = samples[-1]
            print(f"{last.at_s:7.0f} s  rss {last.rss_mb:7.1f} MB  server lag {last.server_lag_s:5.2f} s  "
                  f"client lag {last.client_lag_s:5.2f} s  sessions {last.sessions}", file=sys.stderr, flush=True)
        await asyncio.gather(*tasks)
        errors = [e for s in streams for e in s.errors]
        refused = sum(s.refused for s in streams)
    return report(args, samples, errors, refused)


def report(args: argparse.Namespace, samples: list[Sample], errors: list[str], refused: int) -> int:
    usable = [s for s in samples if s.at_s >= args.settle_s] or samples
    fifth = max(1, len(usable) // 5)
    start, end = usable[:fifth], usable[-fifth:]

    def mean(rows, attr):
        return statistics.fmean(getattr(r, attr) for r in rows)

    print(f"\nsoak: {args.minutes:g} min, {args.streams} real-time streams, engine {args.engine}; "
          f"{samples[-1].sessions} sessions finished, {refused} refused (server_busy), {len(errors)} client errors; "
          f"compared after the first {args.settle_s:g} s (RSS {samples[0].rss_mb:.1f} MB at the first sample)")
    print("| | start (first fifth) | end (last fifth) | change |")
    print("|---|---|---|---|")
    for label, attr, unit in (("RSS", "rss_mb", "MB"), ("server lag", "server_lag_s", "s"), ("client lag", "client_lag_s", "s")):
        a, b = mean(start, attr), mean(end, attr)
        print(f"| {label} | {a:.2f} {unit} | {b:.2f} {unit} | {b - a:+.2f} {unit} |")
    rss_growth = mean(end, "rss_mb") - mean(start, "rss_mb")
    lag_rise = max(mean(end, "server_lag_s") - mean(start, "server_lag_s"), mean(end, "client_lag_s") - mean(start, "client_lag_s"))
    flat = rss_growth < args.max_rss_growth_mb and lag_rise < args.max_lag_rise_s and not errors
    for error in errors[:5]:
        print(f"client error: {error}")
    print(f"flat (RSS growth < {args.max_rss_growth_mb:g} MB, lag rise < {args.max_lag_rise_s:g} s, no errors): "
          f"{'PASS' if flat else 'FAIL'}")
    return 0 if flat else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patchstream.bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long (default %(default)s)")
    parser.add_argument("--streams", type=int, default=2, help="concurrent real-time streams (default %(default)s)")
    parser.add_argument("--engine", default="whisper")
    parser.add_argument("--sample-s", type=float, default=10.0, help="sampling period (default %(default)s)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    parser.add_argument("--max-lag-rise-s", type=float, default=0.5)
    parser.add_argument("--settle-s", type=float, default=60.0, help="warm-up excluded from the comparison (default %(default)s)")
    parser.add_argument("--admission", action="store_true", help="capacity admission on (refusals are retried)")
    parser.add_argument("--speech-dir", default=None, help="the speech set (default ../shared/speech)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or not 1 <= args.streams <= 16:
        parser.error("--minutes must be positive and --streams in 1..16")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
