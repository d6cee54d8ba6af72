"""Video beside captions: caption latency with and without video, interpretation latency, CPU per
stage and dropped frames, for one and four concurrent real-time streams.

    python -m patchstream.bench.video_bench                    # 5-minute 720p talk: 1 stream audio only, 1 and 4 with video
    python -m patchstream.bench.video_bench --minutes 1        # a quicker look
    python -m patchstream.bench.video_bench --runs 4:audio     # one run: 4 streams, audio only

It is: a benchmark (not a test). It makes a talk-like video (`clients/talk_video.py`: 720p slides
with text, a new slide every ~4 s, eSpeak speech over them, repeated to `--minutes`), prepares
what a client sends (16 kHz PCM, and one JPEG per second of media, as `patchstream caption`
sends), then for each run starts an in-process server (Whisper tiny.en; with video composed with
the OCR/scene engine, `--vision ocr,scenes`) and streams it from N concurrent real-time sessions
through the real websocket client. It reports per run:
- caption latency at the client, per reference word: first seen and final, p50/p95 (receive time
  − the word's end in the audio, eSpeak's word events), and WER;
- interpretation latency: receive time of an interpretation's first event − the media time of
  the newest frame it was made from (text: the frame it was first read in; scene: the first
  frame of the new scene), p50/p95, and how many slides were read / cuts found;
- frames sent and dropped (`stats.frames_dropped`: latest frame wins under load);
- CPU seconds per stage, from the kernel's per-thread counters, as a share of (wall × cores):
  the model thread (Whisper's Python side, scene detection), native model pools (CTranslate2's
  threads: the process's CPU time beyond the named threads), the OCR worker (onnxruntime on one thread), decode threads (PCM),
  image decode threads (JPEG decode and resize, one per video session), the event loop (websockets, protocol; the benchmark's client shares it).
The client's own work (reading the file, encoding JPEGs) is done before the clock starts.
It is not: a test; timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import av
import numpy as np

from patchstream.bench.latency import sightings
from patchstream.bench.transcript_metrics import normalize_words, percentile, word_errors, word_latencies
from patchstream.bench.transcript_metrics import TimedWord as ReferenceWord
from patchstream.clients.frame_reader import JpegFrame, encode_jpeg
from patchstream.clients.stream_client import FRAME_BYTES, ReceivedEvent, StreamOptions, stream_reader
from patchstream.clients.talk_video import Talk, make_talk
from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.server import Server

CORES = os.cpu_count() or 1
TICKS = os.sysconf("SC_CLK_TCK")  # /proc CPU times are in clock ticks
STAGES = {"model": "model thread", "ocr": "OCR worker", "decode": "decode threads", "MainThread": "event loop"}
# Threads a session owns are named after it ("s-1a2b3c4d-image_0"): matched by what follows the id.
SESSION_STAGES = {"-image": "image decode threads", "-decode": "decode threads"}
CPU_SAMPLE_S = 0.5  # how often per-thread CPU is read: a session's threads end with it


@dataclass(frozen=True)
class Run:
    """One benchmark configuration."""

    streams: int  # concurrent real-time sessions
    video: bool  # send the 1 fps JPEG frames too (and serve with the OCR/scene engine)

    @property
    def name(self) -> str:
        return f"{self.streams} stream{'s' if self.streams > 1 else ''}, {'audio + video' if self.video else 'audio only'}"


class MemoryAudio:
    """`PcmFileReader.read` over PCM prepared in memory (the client's decoding done beforehand)."""

    def __init__(self, pcm: bytes):
        self._frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        self._next = 0

    def read(self, max_frames: int = 10) -> list[bytes]:
        taken = self._frames[self._next : self._next + max_frames]
        self._next += len(taken)
        return taken


class MemoryFrames:
    """`JpegFrameReader.read` over JPEGs prepared in memory."""

    def __init__(self, frames: Sequence[JpegFrame]):
        self._frames = list(frames)

    def read(self, until_s: float) -> list[JpegFrame]:
        due = [frame for frame in self._frames if frame.time_s < until_s]
        self._frames = self._frames[len(due) :]
        return due


def prepare(talk: Talk) -> tuple[bytes, list[JpegFrame]]:
    """What `patchstream caption` would send: 16 kHz s16 PCM and a JPEG a second."""
    pcm = (np.clip(talk.audio, -1, 1) * 32767).astype("<i2").tobytes()
    jpegs = {}
    frames = []
    for second in range(int(talk.duration_s)):
        slide = talk.slide_at(float(second))
        if slide not in jpegs:
            jpegs[slide] = encode_jpeg(av.VideoFrame.from_ndarray(talk.slide_images[slide], format="rgb24"))
        frames.append(JpegFrame(float(second), jpegs[slide]))
    return pcm, frames


def _stage(name: str) -> str:
    stage = next((label for prefix, label in STAGES.items() if name.startswith(prefix)), None)
    stage = stage or next((label for part, label in SESSION_STAGES.items() if part in name), None)
    return stage or ("other threads" if not name else "other Python threads")


def thread_times() -> dict[int, tuple[str, float]]:
    """Each live thread's stage and CPU seconds so far (user + system), by thread id."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended while we looked
        out[int(tid)] = (_stage(names.get(int(tid), "")), (int(fields[11]) + int(fields[12])) / TICKS)
    return out


def thread_cpu() -> dict[str, float]:
    """CPU seconds per stage of the threads alive now."""
    out: dict[str, float] = {}
    for stage, seconds in thread_times().values():
        out[stage] = out.get(stage, 0.0) + seconds
    return out


class ThreadCpuWatch:
    """CPU seconds per stage spent between `start` and `stop`, threads that came and went included
    (read every `CPU_SAMPLE_S`; a thread loses at most its last interval)."""

    def __init__(self) -> None:
        self._before: dict[int, tuple[str, float]] = {}
        self._latest: dict[int, tuple[str, float]] = {}
        self._task: asyncio.Task | None = None

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(CPU_SAMPLE_S)
            self._latest.update(thread_times())

    def start(self) -> None:
        self._before = thread_times()
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> dict[str, float]:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._latest.update(thread_times())
        out: dict[str, float] = {}
        for tid, (stage, seconds) in self._latest.items():
            out[stage] = out.get(stage, 0.0) + seconds - self._before.get(tid, (stage, 0.0))[1]
        return out


@dataclass(frozen=True)
class RunResult:
    run: Run
    wall_s: float
    events: list[list[ReceivedEvent]]  # per stream
    cpu_s: dict[str, float]  # per stage, during the run


async def stream_all(run: Run, talk: Talk, pcm: bytes, frames: list[JpegFrame]) -> RunResult:
    vision = ("ocr", "scenes") if run.video else ("none",)
    engine = await asyncio.get_running_loop().run_in_executor(None, build_engine, EngineChoice("whisper", vision=vision))
    events: list[list[ReceivedEvent]] = [[] for _ in range(run.streams)]
    async with Server(ServerConfig(port=0, limits=_limits(run)), engine) as server:
        watch, started, process = ThreadCpuWatch(), time.monotonic(), os.times()
        watch.start()
        await asyncio.gather(*(
            stream_reader(MemoryAudio(pcm), StreamOptions(url=server.url), events[i].append, MemoryFrames(frames) if run.video else None)
            for i in range(run.streams)
        ))
        wall = time.monotonic() - started
        after, ended = await watch.stop(), os.times()
    named = {*STAGES.values(), *SESSION_STAGES.values()}
    cpu = {stage: seconds for stage, seconds in after.items() if stage in named}
    total = (ended.user + ended.system) - (process.user + process.system)
    # Native pools (CTranslate2's threads) are unnamed and may come and go within a run, so
    # they are what the process spent beyond the named stages, not a sum over threads.
    cpu["native model pools (rest)"] = max(0.0, total - sum(cpu.values()))
    cpu["process total"] = total
    return RunResult(run, wall, events, cpu)


def _limits(run: Run):
    from patchstream.streaming.config import LimitsConfig  # noqa: PLC0415

    return LimitsConfig(max_sessions=max(16, run.streams))


def interpretation_latencies(events: Sequence[ReceivedEvent]) -> dict[str, list[float]]:
    seen, out = set(), {"text": [], "scene": []}
    for received in events:
        fields = received.fields
        if received.type.startswith("interpretation.") and fields["interpretation_id"] not in seen:
            seen.add(fields["interpretation_id"])
            out.setdefault(fields["kind"], []).append(received.client_time_s - max(fields["frame_times"]))
    return out


def report(result: RunResult, talk: Talk) -> list[str]:
    reference = tuple(
        ReferenceWord(text, w.start, w.end) for w in talk.words for text in normalize_words(w.text)
    )
    first, final, errors, inter, dropped, sent = [], [], [], {"text": [], "scene": []}, 0, 0
    read_ok = cuts_ok = 0
    for events in result.events:
        said = [w for e in events if e.type == "caption.final" for w in normalize_words(e.fields["text"])]
        latencies = word_latencies(reference, said, sightings(events))
        first += latencies.first_seen
        final += latencies.final
        errors.append(word_errors([w.text for w in reference], said))
        for kind, values in interpretation_latencies(events).items():
            inter.setdefault(kind, []).extend(values)
        stats = [e.fields for e in events if e.type == "stats"]
        dropped += stats[-1]["frames_dropped"] if stats else 0
        sent += stats[-1]["frames_received"] if stats else 0
        finals = [e.fields for e in events if e.type == "interpretation.final"]
        read_ok += len({talk.slide_at(f["start"]) for f in finals if f["kind"] == "text"})
        cuts_ok += sum(1 for f in finals if f["kind"] == "scene" and f["start"] <= min(talk.cuts, key=lambda c: abs(c - f["end"])) <= f["end"])
    wer = sum(e.substitutions + e.deletions + e.insertions for e in errors) / max(1, sum(e.reference_words for e in errors))
    row = (
        f"| {result.run.name} | {percentile(first, 50):.2f} | {percentile(final, 50):.2f} | {percentile(final, 95):.2f} | {wer:.3f} "
        f"| {_p(inter['text'])} | {_p(inter['scene'])} | {read_ok}/{len(talk.slide_starts) * result.run.streams} "
        f"| {cuts_ok}/{len(talk.cuts) * result.run.streams} | {dropped}/{sent} |"
    )
    budget = result.wall_s * CORES
    cpu = ", ".join(f"{stage} {seconds / budget:.0%}" for stage, seconds in sorted(result.cpu_s.items(), key=lambda kv: -kv[1]) if seconds > 0.01 * budget)
    return [row, f"  CPU of {CORES} cores over {result.wall_s:.0f} s: {cpu}"]


def _p(values: list[float]) -> str:
    return f"{percentile(values, 50):.2f} / {percentile(values, 95):.2f}" if values else "–"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patchstream.bench.video_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the talk (default %(default)s)")
    parser.add_argument(
        "--runs", nargs="+", default=["1:audio", "1:video", "4:video"],
        help="STREAMS:audio|video per run (default %(default)s)",
    )
    args = parser.parse_args(argv)
    runs = [Run(int(spec.split(":")[0]), spec.split(":")[1] == "video") for spec in args.runs]
    talk = make_talk(repeat_to_s=args.minutes * 60)
    pcm, frames = prepare(talk)
    print(f"# a {talk.duration_s:.0f} s 720p talk: {len(talk.slide_starts)} slides, {len(frames)} JPEG frames "
          f"({sum(len(f.data) for f in frames) / len(frames) / 1024:.0f} KiB each), {len(talk.words)} words", flush=True)
    print("| run | first p50 | final p50 | final p95 | WER | text latency p50 / p95 | scene latency p50 / p95 "
          "| slides read | cuts found | frames dropped/received |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        result = asyncio.run(stream_all(run, talk, pcm, frames))
        print("\n".join(report(result, talk)), flush=True)
    print(f"latency = client receive time − media time (word end / newest frame); seconds. "
          f"command: python -m patchstream.bench.video_bench {' '.join(argv if argv is not None else sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
