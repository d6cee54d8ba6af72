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

import numpy as np

from patchstream.model.api import AudioChunk, CaptionUpdate, Engine, SessionOptions, samples_to_seconds, seconds_to_samples
from patchstream.streaming.config import SchedulerConfig

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
    processed_s: float = 0.0  # media seconds the engine reported as processed
    dropped_samples: int = 0
    last_step: int = -1  # index of the scheduler step that last advanced this session
    finishing: bool = False  # no step after finish was requested
    failed: bool = False

    @property
    def backlog_s(self) -> float:
        return samples_to_seconds(self.backlog_samples)

    @property
    def dropped_s(self) -> float:
        return samples_to_seconds(self.dropped_samples)

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
        opening = asyncio.get_running_loop().run_in_executor(self._executor, self.engine.open, options)
        try:
            state = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The session went away while the engine was still allocating: free what it makes.
            opening.add_done_callback(self._close_orphan)
            raise
        slot = SessionSlot(next(self._ids), state, on_update, on_failure, seconds_to_samples(max_backlog_s))
        self._slots[slot.slot_id] = slot
        return slot

    def _close_orphan(self, opening: asyncio.Future) -> None:
        if not opening.cancelled() and opening.exception() is None:
            self._executor.submit(self.engine.close, opening.result())

    def submit(self, slot: SessionSlot, chunk: AudioChunk) -> int:
        """Queue audio for the model; returns how many samples had to be dropped (usually 0)."""
        if slot.finishing or slot.failed:
            return 0
        slot.backlog.append(chunk)  # the chunker already flags time jumps as discontinuities
        slot.backlog_samples += len(chunk.samples)
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
        # Fairness: the session served least recently goes first. ("Most behind first" would let
        # a client sending faster than real time win every batch and starve live sessions.)
        ready.sort(key=lambda slot: slot.last_step)
        return ready[: max(1, spec.max_batch)]

    @property
    def running(self) -> bool:
        """False once the scheduling loop has stopped (health checks use it)."""
        return self._task is not None and not self._task.done()

    async def _loop(self) -> None:
        while True:
            batch = self._pick()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._step(batch)
            except Exception:  # noqa: BLE001 - a bug here must not silence every session
                log.exception("scheduler step failed")

    async def _step(self, batch: Sequence[SessionSlot]) -> None:
        work = [(slot, slot.take_backlog()) for slot in batch]

        def run() -> list[CaptionUpdate | Exception]:
            started = time.perf_counter()
            try:
                return step_all()
            finally:
                self.busy_s += time.perf_counter() - started

        def step_all() -> list[CaptionUpdate | Exception]:
            results: list[CaptionUpdate | Exception | None] = [None] * len(work)
            for index, (slot, chunks) in enumerate(work):
                try:
                    for chunk in chunks:
                        self.engine.feed(slot.state, chunk)
                except Exception as error:  # noqa: BLE001 - this session's audio, this session's error
                    results[index] = error
            fed = [index for index, result in enumerate(results) if result is None]
            try:
                for index, update in zip(fed, self.engine.step([work[i][0].state for i in fed])):
                    results[index] = update
                return results
            except Exception as error:  # noqa: BLE001
                if len(fed) == 1:
                    results[fed[0]] = error
                    return results
            # A batched step failed: retry one by one so only the faulty session pays.
            for index in fed:
                try:
                    results[index] = self.engine.step([work[index][0].state])[0]
                except Exception as error:  # noqa: BLE001 - reported to that session
                    results[index] = error
            return results

        try:
            results = await self._on_model_thread(run)
        except Exception as error:  # noqa: BLE001 - the model thread itself failed: all pay
            results = [error] * len(work)
        self.steps_run += 1
        self.batched_sessions += len(work)
        for (slot, _), result in zip(work, results):
            slot.last_step = self.steps_run
            if slot.slot_id in self._slots:
                self._deliver(slot, result)

    def _deliver(self, slot: SessionSlot, result: CaptionUpdate | Exception) -> None:
        """Hand a step's outcome to its session; a session's failing callback fails that session."""
        try:
            if isinstance(result, Exception):
                raise result
            slot.processed_s = max(slot.processed_s, result.processed_until)
            slot.on_update(result)
        except Exception as error:  # noqa: BLE001 - never let one session stop the scheduler
            slot.failed = True
            log.error("engine failed on slot %s: %r", slot.slot_id, error)
            try:
                slot.on_failure(error)
            except Exception:  # noqa: BLE001
                log.exception("failure callback of slot %s failed", slot.slot_id)
