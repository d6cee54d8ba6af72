"""The scheduler: owns the model thread and shares the engine fairly between sessions.

Every engine call (open, feed, step, finish, close) runs on one dedicated model thread, never on
the event loop, so engines need no locks. The scheduling loop (a coroutine) picks the sessions
whose new audio is worth a step — those trailing furthest behind first — batches up to
`engine.spec.max_batch` of them into one `step`, and hands each session its update.

Drop rule of the per-session backlog: audio waiting for the model is bounded by
`max_backlog_s`; beyond it the oldest waiting chunks are dropped, counted, and the next chunk fed
is flagged as a discontinuity so the engine never stitches across the hole.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from model.api import AudioChunk, CaptionUpdate, Engine, SessionOptions, samples_to_seconds, seconds_to_samples
from streaming.config import SchedulerConfig

log = logging.getLogger(__name__)


@dataclass
class SessionSlot:
    """The scheduler's view of one session: its engine state and waiting audio."""

    slot_id: int
    state: object  # the engine's per-session state; touched only on the model thread
    on_update: Callable[[CaptionUpdate], None]  # called on the event loop with each step's update
    on_failure: Callable[[Exception], None]  # called on the event loop if the engine fails
    max_backlog_samples: int
    backlog: deque[AudioChunk] = field(default_factory=deque)
    backlog_samples: int = 0
    received_samples: int = 0  # media samples submitted so far (end of the last chunk)
    processed_s: float = 0.0  # media seconds the engine reported as processed
    dropped_samples: int = 0
    drop_pending: bool = False  # the next chunk follows dropped audio
    finishing: bool = False  # no step after finish was requested
    failed: bool = False

    @property
    def backlog_s(self) -> float:
        return samples_to_seconds(self.backlog_samples)

    @property
    def dropped_s(self) -> float:
        return samples_to_seconds(self.dropped_samples)

    @property
    def received_s(self) -> float:
        return samples_to_seconds(self.received_samples)

    def take_backlog(self) -> list[AudioChunk]:
        chunks = list(self.backlog)
        self.backlog.clear()
        self.backlog_samples = 0
        return chunks


class Scheduler:
    """Runs the engine for all sessions on one model thread."""

    def __init__(self, engine: Engine, config: SchedulerConfig):
        self.engine = engine
        self.config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._slots: dict[int, SessionSlot] = {}
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.steps_run = 0  # for tests and metrics
        self.batched_sessions = 0  # sessions advanced, summed over steps (/ steps_run = mean batch)
        self.busy_s = 0.0  # model-thread seconds spent in steps (for real-time factor)

    async def _on_model_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for slot in list(self._slots.values()):
            await self.close(slot)
        self._executor.shutdown(wait=True)

    async def warm_up(self, seconds: float = 2.0) -> None:
        """Run one full session through the engine so the first client pays no start-up cost."""
        import numpy as np  # noqa: PLC0415 - only needed here

        def run() -> None:
            state = self.engine.open(SessionOptions())
            n = seconds_to_samples(seconds) // self.engine.spec.samples_per_chunk * self.engine.spec.samples_per_chunk
            rng = np.random.default_rng(0)
            self.engine.feed(state, AudioChunk((rng.standard_normal(n) * 1e-3).astype(np.float32), 0))
            self.engine.step([state])
            self.engine.finish(state)
            self.engine.close(state)

        await self._on_model_thread(run)

    async def open(
        self,
        options: SessionOptions,
        on_update: Callable[[CaptionUpdate], None],
        on_failure: Callable[[Exception], None],
        max_backlog_s: float,
    ) -> SessionSlot:
        state = await self._on_model_thread(self.engine.open, options)
        slot = SessionSlot(next(self._ids), state, on_update, on_failure, seconds_to_samples(max_backlog_s))
        self._slots[slot.slot_id] = slot
        return slot

    def submit(self, slot: SessionSlot, chunk: AudioChunk) -> int:
        """Queue audio for the model; returns how many samples had to be dropped (usually 0)."""
        if slot.finishing or slot.failed:
            return 0
        if slot.drop_pending or (slot.received_samples and chunk.start_sample != slot.received_samples):
            chunk = dataclasses.replace(chunk, discontinuity=True)
            slot.drop_pending = False
        slot.backlog.append(chunk)
        slot.backlog_samples += len(chunk.samples)
        slot.received_samples = chunk.end_sample
        dropped = 0
        while slot.backlog_samples > slot.max_backlog_samples and len(slot.backlog) > 1:
            oldest = slot.backlog.popleft()
            slot.backlog_samples -= len(oldest.samples)
            dropped += len(oldest.samples)
            slot.backlog[0] = dataclasses.replace(slot.backlog[0], discontinuity=True)
        slot.dropped_samples += dropped
        self._wake.set()
        return dropped

    async def finish(self, slot: SessionSlot) -> CaptionUpdate:
        """Feed what is waiting and let the engine commit everything; no more steps afterwards."""
        slot.finishing = True
        chunks = slot.take_backlog()

        def run() -> CaptionUpdate:
            for chunk in chunks:
                self.engine.feed(slot.state, chunk)
            return self.engine.finish(slot.state)

        update = await self._on_model_thread(run)
        slot.processed_s = max(slot.processed_s, update.processed_until)
        return update

    async def close(self, slot: SessionSlot) -> None:
        """Forget the session and free its engine state (safe to call twice)."""
        if self._slots.pop(slot.slot_id, None) is None:
            return
        slot.finishing = True
        slot.backlog.clear()
        try:
            await self._on_model_thread(self.engine.close, slot.state)
        except Exception:  # a failing close must not take the server down
            log.exception("engine close failed for slot %s", slot.slot_id)

    def _pick(self) -> list[SessionSlot]:
        spec = self.engine.spec
        ready = [
            slot
            for slot in self._slots.values()
            if not slot.finishing
            and not slot.failed
            and slot.backlog_samples >= max(spec.min_step_samples, 1)
        ]
        # Fairness: the session trailing furthest behind its own audio goes first.
        ready.sort(key=lambda slot: slot.processed_s - slot.received_s)
        return ready[: max(1, spec.max_batch)]

    async def _loop(self) -> None:
        while True:
            batch = self._pick()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._step(batch)

    async def _step(self, batch: Sequence[SessionSlot]) -> None:
        work = [(slot, slot.take_backlog()) for slot in batch]

        def run() -> list[CaptionUpdate | Exception]:
            started = time.perf_counter()
            try:
                return step_all()
            finally:
                self.busy_s += time.perf_counter() - started

        def step_all() -> list[CaptionUpdate | Exception]:
            for slot, chunks in work:
                for chunk in chunks:
                    self.engine.feed(slot.state, chunk)
            try:
                return list(self.engine.step([slot.state for slot, _ in work]))
            except Exception:
                if len(work) == 1:
                    raise
            # A batched step failed: retry one by one so only the faulty session pays.
            results: list[CaptionUpdate | Exception] = []
            for slot, _ in work:
                try:
                    results.append(self.engine.step([slot.state])[0])
                except Exception as error:  # noqa: BLE001 - reported to that session
                    results.append(error)
            return results

        try:
            results = await self._on_model_thread(run)
        except Exception as error:  # noqa: BLE001 - a single session's failure
            results = [error]
        self.steps_run += 1
        self.batched_sessions += len(work)
        for (slot, _), result in zip(work, results):
            if slot.slot_id not in self._slots:
                continue
            if isinstance(result, Exception):
                slot.failed = True
                log.error("engine failed on slot %s: %r", slot.slot_id, result)
                slot.on_failure(result)
                continue
            slot.processed_s = max(slot.processed_s, result.processed_until)
            slot.on_update(result)
