"""The latency benchmark's bookkeeping, without a model: events → file results, stream splits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from patchstream.bench.latency import OfflineResult, captions_report, lag_trend, measure, split_streams
from patchstream.bench.transcript_metrics import word_errors
from patchstream.bench.speech_set import SpeechFile
from patchstream.clients.stream_client import ReceivedEvent
from patchstream.streaming.protocol import ParsedEvent


def speech_file(name: str = "a.wav", duration_s: float = 3.0) -> SpeechFile:
    return SpeechFile(name, Path(name), "read", duration_s, "Hello big world.", ("hello", "big", "world"), (0.5, 1.0, 1.5))


def event(kind: str, at: float, **fields) -> ReceivedEvent:
    return ReceivedEvent(ParsedEvent(kind, {"type": kind, **fields}), client_time_s=at, client_wall_time=0.0)


def word(text: str, start: float, end: float, stable: bool) -> dict:
    return {"text": text, "start": start, "end": end, "stable": stable}


def test_measure_reads_finals_partials_and_stats():
    events = [
        event("caption.partial", 0.8, words=[word("Hello", 0.1, 0.5, False)]),
        event("stats", 1.0, lag_s=0.3),
        event("caption.partial", 1.4, words=[word("Hello", 0.1, 0.5, True), word("bag", 0.6, 1.0, False)]),
        event("caption.final", 2.1, text="Hello bag world.",
              words=[word("Hello", 0.1, 0.5, True), word("bag", 0.6, 1.0, True), word("world.", 1.1, 1.5, True)]),
        event("stats", 2.5, lag_s=0.2),
    ]
    result = measure(speech_file(), events, busy_s=1.5)
    assert result.text == "Hello bag world."
    assert (result.errors.substitutions, result.errors.wer) == (1, pytest.approx(1 / 3))
    assert result.latencies.final == pytest.approx((0.9, 0.6))  # "hello", "world"; "bag" is wrong
    assert result.latencies.first_seen == pytest.approx((0.3, 0.6))
    assert result.lags == (0.3, 0.2) and result.busy_s == 1.5 and result.repeats == 0


def test_captions_report_brackets_repeated_phrases():
    final = event("caption.final", 2.0, text="Hello big world, hello big world.", words=[])
    result = measure(speech_file(), [final], busy_s=None)
    assert result.repeats == 1 and result.errors.insertions == 3
    baseline = {"a.wav": OfflineResult("Hello big world.", word_errors(["hello"], ["hello"]), 0)}
    assert captions_report([result], baseline).splitlines()[-3:] == [
        "- a.wav", "  - live: [hello big world hello big world]", "  - offline: hello big world",
    ]


def test_streams_get_similar_durations_and_every_file_once():
    files = [speech_file(f"{i}.wav", d) for i, d in enumerate([10, 9, 8, 3, 2, 2, 1, 1])]
    streams = split_streams(files, 4)
    assert sorted(f.name for s in streams for f in s) == sorted(f.name for f in files)
    totals = [sum(f.duration_s for f in s) for s in streams]
    assert max(totals) - min(totals) <= 2


def test_with_fewer_files_than_streams_files_repeat():
    files = [speech_file("a.wav"), speech_file("b.wav")]
    assert [[f.name for f in s] for s in split_streams(files, 4)] == [["a.wav"], ["b.wav"], ["a.wav"], ["b.wav"]]


def test_lag_trend_compares_the_first_and_last_third():
    assert lag_trend([0.1, 0.1, 0.5, 0.5, 0.9, 0.9]) == pytest.approx((0.1, 0.9, 0.9))
    early, late, peak = lag_trend([0.4])
    assert math.isnan(early) and math.isnan(late) and peak == 0.4
