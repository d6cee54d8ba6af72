"""What a session reports as it runs: finals to the journal, numbers to the metrics.

It is: the one object a `Session` calls with facts (audio queued for the engine, new finals,
an event sent, audio dropped); it writes finals to the journal and feeds the server's metrics,
including caption latency. A session without an observer (unit tests) reports nothing.

It is not: a decider; the session protocol decides, this only records.
"""

from __future__ import annotations

from typing import Sequence

from patchstream.model.api import samples_to_seconds
from patchstream.streaming.journal import Journal
from patchstream.streaming.metrics import ArrivalClock, ServerMetrics
from patchstream.streaming.protocol import CaptionFinal, Error, Event, InterpretationFinal


class SessionObserver:
    """Journal and metrics of one session."""

    def __init__(self, session_id: str, metrics: ServerMetrics, journal: Journal, sample_rate: int):
        self.session_id = session_id
        self._metrics = metrics
        self._journal = journal
        self._rate = sample_rate
        self._arrivals = ArrivalClock(sample_rate)
        self._submitted_samples = 0  # media time reached by audio queued for the engine

    def submitted(self, end_sample: int, now: float) -> None:
        """Audio up to `end_sample` is queued for the engine."""
        if end_sample > self._submitted_samples:
            self._metrics.media_seconds.inc(samples_to_seconds(end_sample - self._submitted_samples, self._rate))
            self._submitted_samples = end_sample
        self._arrivals.submitted(end_sample, now)

    def finals(self, finals: Sequence[CaptionFinal | InterpretationFinal], now: float) -> None:
        for final in finals:
            self._journal.append(self.session_id, final)
            self._metrics.finals.inc()
            if isinstance(final, CaptionFinal):
                latency = self._arrivals.latency(final.end, now)
                if latency is not None:
                    self._metrics.caption_latency.observe(latency)

    def sent(self, event: Event) -> None:
        if isinstance(event, Error):
            self._metrics.errors.labels(code=str(event.code)).inc()

    def audio_dropped(self, samples: int) -> None:
        self._metrics.audio_dropped.inc(samples_to_seconds(samples, self._rate))
