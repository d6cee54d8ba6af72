"""Admission: whether one more session may start, from the engine's measured real-time headroom.

It is: a sans-I/O capacity model and the per-key usage counters. The model learns what one
stream costs — model-thread seconds per second of media, measured at warm-up and then over a
sliding window of real steps (`observe_step`; the latest measurement stands through idle times)
— and how busy the model thread is now. A new
session is admitted when the predicted load with it stays under `target_utilisation` and no
session's audio is waiting longer than `max_lag_s` (the model is not behind). So a machine that
carries four real-time streams admits about four, whatever `max_sessions` says; `max_sessions`
stays a hard cap. Refusals carry a retry hint. Times are arguments (loop seconds).

Cost is the window's ratio of busy time to media time, so it reflects today's batching: a batch
of four streams costs less per stream than one stream alone, and the estimate follows as load
grows. Before any traffic the warm-up measurement stands in; it underestimates an engine that
skips silence (Whisper's VAD sees the warm-up's near-silence), so on a cold server a burst of
simultaneous starts may be over-admitted until the first seconds of speech are measured, after
which the lag rule and the measured cost hold admissions back.

It is not: authentication (`auth.py`), or the hard `max_sessions` cap (the server's).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from patchstream.streaming.auth import Principal

WINDOW_S = 10.0  # the recent past the model averages over
MIN_WINDOW_MEDIA_S = 2.0  # media seconds a window needs before its cost replaces warm-up's
MIN_ALLOWANCE_S = 1.0  # a key with less media time left than this cannot start a session
MAX_WINDOW_STEPS = 20_000  # bound of the step record (a fast fake engine steps very often)


@dataclass(frozen=True)
class AdmissionConfig:
    """How much of the model thread admitted sessions may use."""

    target_utilisation: float = 0.8  # predicted busy fraction of the model thread admission allows
    max_lag_s: float = 3.0  # audio waiting for the model longer than this: the model is behind, admit nobody
    retry_after_s: float = 10.0  # the hint a refused client gets
    enabled: bool = True  # False: only the hard `max_sessions` cap (benchmarks of overload)


@dataclass(frozen=True)
class Refusal:
    """Why a session may not start now."""

    code: str  # an ErrorCode value: server_busy or quota_exceeded
    message: str  # for humans
    retry_after_s: float | None  # when trying again makes sense; None = not by waiting


class CapacityModel:
    """Cost per stream and current load, from steps measured on the model thread."""

    def __init__(self, config: AdmissionConfig):
        self.config = config
        self._steps: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=MAX_WINDOW_STEPS)
        self._warm_cost: float | None = None  # model s per media s of the warm-up
        self._last_cost: float | None = None  # the latest cost measured on real traffic (kept through idle times)

    def warmed_up(self, busy_s: float, media_s: float) -> None:
        if media_s > 0:
            self._warm_cost = busy_s / media_s

    def observe_step(self, busy_s: float, media_s: float, now: float) -> None:
        """One scheduler step: `busy_s` of model time for `media_s` of audio (all its sessions)."""
        self._steps.append((now, busy_s, media_s))

    def _window(self, now: float) -> tuple[float, float]:
        while self._steps and self._steps[0][0] < now - WINDOW_S:
            self._steps.popleft()
        return sum(s[1] for s in self._steps), sum(s[2] for s in self._steps)

    def utilisation(self, now: float) -> float:
        """Busy fraction of the model thread over the window."""
        busy, _ = self._window(now)
        return busy / WINDOW_S

    def cost_per_stream(self, now: float) -> float:
        """Model seconds per second of a real-time stream (the real-time factor of one stream)."""
        busy, media = self._window(now)
        if media >= MIN_WINDOW_MEDIA_S:
            self._last_cost = busy / media
            return self._last_cost
        return self._last_cost or self._warm_cost or 0.0

    def capacity(self, now: float) -> float:
        """Real-time streams the model carries at the target (inf while a stream costs nothing)."""
        cost = self.cost_per_stream(now)
        return self.config.target_utilisation / cost if cost > 0 else float("inf")

    def decide(self, streams: int, max_backlog_s: float, now: float) -> Refusal | None:
        """Admit one more stream beside `streams` live ones? None = yes."""
        if not self.config.enabled:
            return None
        retry = self.config.retry_after_s
        if max_backlog_s > self.config.max_lag_s:
            return Refusal(
                "server_busy", f"the model is {max_backlog_s:.1f} s behind; try again in {retry:g} s", retry
            )
        cost = self.cost_per_stream(now)
        # The measured busy time may still hold sessions that have just ended; with no live
        # stream it says nothing about the next one.
        measured = self.utilisation(now) if streams else 0.0
        predicted = max(measured, streams * cost) + cost
        if predicted > self.config.target_utilisation:
            return Refusal(
                "server_busy",
                f"at capacity: {streams} live sessions use the model's real-time headroom "
                f"(about {self.capacity(now):.1f} streams); try again in {retry:g} s",
                retry,
            )
        return None


class KeyUsage:
    """Per-key concurrent sessions and media minutes (for this server run)."""

    def __init__(self):
        self._sessions: dict[str, int] = collections.defaultdict(int)
        self._media_s: dict[str, float] = collections.defaultdict(float)

    def refusal(self, principal: Principal) -> Refusal | None:
        if principal.max_sessions is not None and self._sessions[principal.key_id] >= principal.max_sessions:
            return Refusal(
                "quota_exceeded",
                f"key {principal.key_id!r} already has {principal.max_sessions} live sessions, its limit",
                None,
            )
        remaining = self.remaining_s(principal)
        if remaining is not None and remaining < MIN_ALLOWANCE_S:
            return Refusal(
                "quota_exceeded", f"key {principal.key_id!r} has used its {principal.max_media_minutes:g} media minutes", None
            )
        return None

    def remaining_s(self, principal: Principal) -> float | None:
        """Media seconds the key may still stream (None: no limit)."""
        if principal.max_media_minutes is None:
            return None
        return max(0.0, principal.max_media_minutes * 60.0 - self._media_s[principal.key_id])

    def opened(self, principal: Principal) -> None:
        self._sessions[principal.key_id] += 1

    def closed(self, principal: Principal, media_s: float) -> None:
        self._sessions[principal.key_id] -= 1
        self._media_s[principal.key_id] += media_s
