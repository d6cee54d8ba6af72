"""Prometheus metrics of one server, in a registry of its own (no process-global state: tests
and benchmarks run many servers in one process).

It is: the metric objects and `render()` for `GET /metrics`, plus `ArrivalClock`, which turns a
final's media end time into the loop time its audio reached the server (caption latency is
"last word's audio available to the engine → final sent to the outbox").

It is not: where numbers come from; the server, sessions and scheduler report into it.
"""

from __future__ import annotations

import collections
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
STEP_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ARRIVALS_KEPT = 4_096  # submitted chunks remembered per session for latency (≈ 3 min of 40 ms chunks)


class ServerMetrics:
    """Every metric of one server."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions_active = Gauge("patchstream_sessions_active", "Sessions open now (detached ones included)", registry=r)
        self.sessions_detached = Gauge("patchstream_sessions_detached", "Sessions waiting for their client to resume", registry=r)
        self.sessions = Counter("patchstream_sessions", "Sessions by outcome of admission", ["outcome"], registry=r)
        self.resumes = Counter("patchstream_resumes", "Successful resumes of a dropped session", registry=r)
        self.media_seconds = Counter("patchstream_media_seconds_in", "Audio seconds received and decoded", registry=r)
        self.caption_latency = Histogram(
            "patchstream_caption_latency_seconds",
            "From a final's last audio reaching the engine queue to the final being sent",
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.finals = Counter("patchstream_finals", "Final captions and interpretations sent", registry=r)
        self.audio_dropped = Counter("patchstream_audio_dropped_seconds", "Audio dropped because the model fell behind", registry=r)
        self.errors = Counter("patchstream_errors", "Error events and refused requests, by code", ["code"], registry=r)
        self.step_seconds = Histogram(
            "patchstream_engine_step_seconds", "Duration of one scheduler step on the model thread",
            buckets=STEP_BUCKETS_S, registry=r,
        )
        self.lag = Gauge("patchstream_lag_seconds", "Longest audio backlog waiting for the model, over sessions", registry=r)
        self.utilisation = Gauge("patchstream_model_utilisation", "Busy fraction of the model thread (10 s window)", registry=r)
        self.capacity = Gauge("patchstream_capacity_streams", "Real-time streams the model is estimated to carry", registry=r)

    def bind(self, lag: Callable[[], float], utilisation: Callable[[], float], capacity: Callable[[], float]) -> None:
        """Gauges read at scrape time from the server's live state."""
        self.lag.set_function(lag)
        self.utilisation.set_function(utilisation)
        self.capacity.set_function(capacity)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ArrivalClock:
    """When each stretch of a session's audio reached the engine queue (sans-I/O, bounded)."""

    def __init__(self, sample_rate: int):
        self._rate = sample_rate
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque(maxlen=ARRIVALS_KEPT)

    def submitted(self, end_sample: int, now: float) -> None:
        self._arrivals.append((end_sample, now))

    def latency(self, media_end_s: float, now: float) -> float | None:
        """Seconds since the audio up to `media_end_s` was queued; None if it is no longer known."""
        target = media_end_s * self._rate
        while self._arrivals and self._arrivals[0][0] < target - self._rate:  # keep 1 s before it
            self._arrivals.popleft()
        for end_sample, at in self._arrivals:
            if end_sample >= target:
                return max(0.0, now - at)
        return None
