"""The video benchmark's parts that need no model: prepared media, per-thread CPU, interpretation latency."""

from __future__ import annotations

import threading

import pytest

from patchstream.bench.video_bench import MemoryAudio, MemoryFrames, interpretation_latencies, prepare, thread_cpu
from patchstream.clients import speech
from patchstream.clients.stream_client import FRAME_BYTES, ReceivedEvent
from patchstream.streaming.protocol import ParsedEvent


@pytest.mark.skipif(not speech.espeak_available(), reason="needs eSpeak NG")
def test_the_prepared_talk_is_a_jpeg_a_second_and_its_pcm():
    pytest.importorskip("PIL")
    from patchstream.clients.talk_video import make_talk  # noqa: PLC0415

    talk = make_talk()
    pcm, frames = prepare(talk)
    assert len(pcm) == 2 * len(talk.audio)
    assert [f.time_s for f in frames] == [float(s) for s in range(int(talk.duration_s))]
    assert all(f.data.startswith(b"\xff\xd8") for f in frames)
    audio = MemoryAudio(pcm)
    assert b"".join(audio.read(10**9)) == pcm and audio.read() == []
    video = MemoryFrames(frames)
    assert [f.time_s for f in video.read(2.5)] == [0.0, 1.0, 2.0] and video.read(2.5) == []


def test_thread_cpu_names_the_stages_of_live_threads():
    done = threading.Event()
    workers = [threading.Thread(target=done.wait, name=name) for name in ("ocr_0", "s-1a2b3c4d-image_0")]
    for worker in workers:
        worker.start()
    try:
        stages = thread_cpu()
    finally:
        done.set()
        for worker in workers:
            worker.join()
    assert {"event loop", "OCR worker", "image decode threads"} <= set(stages)
    assert all(seconds >= 0 for seconds in stages.values())


def test_interpretation_latency_counts_each_interpretation_once_from_its_newest_frame():
    def event(type_, client_time, **fields):
        return ReceivedEvent(ParsedEvent(type_, {"type": type_, **fields}), client_time, 0.0)
    events = [
        event("interpretation.partial", 5.5, interpretation_id="t0", kind="text", frame_times=[5.0]),
        event("interpretation.final", 9.0, interpretation_id="t0", kind="text", frame_times=[5.0, 8.0]),
        event("interpretation.final", 9.2, interpretation_id="s0", kind="scene", frame_times=[8.0, 9.0]),
    ]
    assert interpretation_latencies(events) == {"text": [0.5], "scene": [pytest.approx(0.2)]}
