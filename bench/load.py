"""Load: ramp real-time sessions past the server's capacity and check that admission protects
the admitted ones.

    python -m patchstream.bench.load                         # whisper tiny.en, 8 sessions, one every 2 s
    python -m patchstream.bench.load --sessions 12 --ramp-s 1 --file mfa_cold_corpus.wav
    python -m patchstream.bench.load --engine fake           # the plumbing only, no model

It is: a bounded benchmark on loopback only (an in-process server on 127.0.0.1, port 0, with
capacity-based admission as `patchstream serve` has it). First one session streams a speech file
alone at real-time pace (the baseline, same run); then `--sessions` sessions start `--ramp-s`
apart, each streaming the same file at real-time pace. It reports each session's outcome
(admitted, or refused and with which error and retry hint), the final-caption latency p95 of the
admitted sessions against the baseline's (target: within 1.5x), the server's lag, and whether
anything crashed (an `internal_error`, a session that neither finished nor was refused cleanly,
or `/healthz` failing afterwards).

Final latency of a word = client receive time of the first event showing it committed (`stable`)
− the word's end time in the audio (the engine's own word times): how late a live viewer sees a
word become final.

It is not: a test (timings depend on the machine and what else runs on it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from patchstream.bench import speech_set
from patchstream.bench.transcript_metrics import percentile
from patchstream.clients.stream_client import ClientError, ReceivedEvent, ServerError, StreamOptions, stream_file
from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.server import Server

TARGET_RATIO = 1.5  # admitted sessions' final p95 may be at most this times a lone session's


@dataclass
class SessionOutcome:
    """What one client saw."""

    index: int
    admitted: bool = False
    error: str | None = None  # the fatal error code, if any
    retry_after_s: float | None = None
    latencies: list[float] = field(default_factory=list)  # final latency of each word
    lags: list[float] = field(default_factory=list)  # `stats.lag_s`, in order


class LatencyProbe:
    """Collects final latencies and lags from one session's events."""

    def __init__(self, outcome: SessionOutcome):
        self.outcome = outcome
        self._committed: set[tuple[str, float]] = set()

    def __call__(self, received: ReceivedEvent) -> None:
        fields = received.fields
        if received.type == "ready":
            self.outcome.admitted = True
        elif received.type in ("caption.partial", "caption.final"):
            for word in fields.get("words", ()):
                key = (word["text"], round(word["start"], 2))
                if word.get("stable") and key not in self._committed:
                    self._committed.add(key)
                    self.outcome.latencies.append(received.client_time_s - word["end"])
        elif received.type == "stats":
            self.outcome.lags.append(fields.get("lag_s", 0.0))
        elif received.type == "error" and fields.get("fatal"):
            self.outcome.error = fields.get("code")
            self.outcome.retry_after_s = fields.get("retry_after_s")


async def stream_one(url: str, path: Path, index: int, delay_s: float) -> SessionOutcome:
    await asyncio.sleep(delay_s)
    outcome = SessionOutcome(index)
    try:
        await stream_file(path, StreamOptions(url=url), LatencyProbe(outcome))
    except ServerError as error:
        outcome.error = outcome.error or error.code
    except ClientError as error:
        outcome.error = f"client: {error}"
    return outcome


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return response.status


async def run(args: argparse.Namespace) -> int:
    path = args.path
    engine = await asyncio.get_running_loop().run_in_executor(None, build_engine, EngineChoice(args.engine))
    config = ServerConfig(host="127.0.0.1", port=0)  # loopback only
    async with Server(config, engine) as server:
        print(f"engine {engine.spec.name}; file {path.name}; warm-up cost {server.capacity.cost_per_stream(time.monotonic()):.3f}"
              " model s per media s", file=sys.stderr)
        baseline = await stream_one(server.url, path, 0, 0.0)
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(stream_one(server.url, path, i + 1, i * args.ramp_s) for i in range(args.sessions))
        )
        elapsed = time.monotonic() - started
        health = await asyncio.get_running_loop().run_in_executor(None, healthz, server.port)
        capacity = server.capacity.capacity(time.monotonic())
    return report(args, baseline, outcomes, health, capacity, elapsed)


def report(args, baseline: SessionOutcome, outcomes: list[SessionOutcome], health: int, capacity: float, elapsed: float) -> int:
    print(f"\n| session | start s | outcome | words | final p50 s | final p95 s | max lag s |")
    print("|---|---|---|---|---|---|---|")
    for o in [baseline, *outcomes]:
        start = "alone" if o.index == 0 else f"{(o.index - 1) * args.ramp_s:.0f}"
        what = "admitted" if o.admitted and o.error is None else (
            f"refused: {o.error} (retry_after_s {o.retry_after_s:g})" if o.retry_after_s is not None else f"ended: {o.error}")
        print(f"| {o.index or 'baseline'} | {start} | {what} | {len(o.latencies)} | {percentile(o.latencies, 50):.2f} |"
              f" {percentile(o.latencies, 95):.2f} | {max(o.lags, default=0.0):.2f} |")
    admitted = [o for o in outcomes if o.admitted and o.error is None]
    refused = [o for o in outcomes if not o.admitted]
    base_p95 = percentile(baseline.latencies, 95)
    all_admitted = [x for o in admitted for x in o.latencies]
    p95 = percentile(all_admitted, 95)
    worst = max((percentile(o.latencies, 95) for o in admitted), default=float("nan"))
    crashed = [o for o in outcomes if o.error not in (None, "server_busy") or (o.admitted and o.error is not None)]
    refused_ok = all(o.error == "server_busy" and o.retry_after_s is not None for o in refused)
    print(f"\nsessions requested {len(outcomes)}, admitted {len(admitted)}, refused {len(refused)} "
          f"(capacity estimate at the end: {capacity:.1f} streams); ramp + streaming took {elapsed:.0f} s")
    print(f"final p95: lone session {base_p95:.2f} s; admitted sessions pooled {p95:.2f} s "
          f"({p95 / base_p95:.2f}x), worst session {worst:.2f} s ({worst / base_p95:.2f}x); target ≤ {TARGET_RATIO}x")
    print(f"refused sessions all got server_busy with a retry hint: {refused_ok}; "
          f"sessions ended otherwise: {len(crashed)}; /healthz afterwards: {health}")
    ok = p95 <= TARGET_RATIO * base_p95 and refused_ok and not crashed and health == 200
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patchstream.bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="whisper")
    parser.add_argument("--sessions", type=int, default=8, help="sessions in the ramp (default %(default)s)")
    parser.add_argument("--ramp-s", type=float, default=2.0, help="seconds between session starts (default %(default)s)")
    parser.add_argument("--file", default="mfa_acoustic_corpus.wav", help="speech set file (default %(default)s)")
    parser.add_argument("--speech-dir", default=None, help="the speech set (default ../shared/speech)")
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= 32:
        parser.error("--sessions must be in 1..32 (a bounded load)")
    directory = Path(args.speech_dir) if args.speech_dir else speech_set.default_speech_dir()
    args.path = directory / args.file
    if not args.path.exists():
        parser.error(f"{args.path} not found")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
