"""The scheduler: owns the model thread and shares the engine fairly between sessions.

Every engine call (open, feed, control, step, finish, close) runs on one dedicated model thread,
never on the event loop, so engines need no locks. The scheduling loop (a coroutine) picks the
sessions whose new media is worth a step (at least `spec.min_step_samples` of audio, or a video
frame), or whose last `StepResult` said `pending` (the engine has work left without new media) —
the one served least recently first — batches up to `engine.spec.max_batch` of them
into one `step`, and hands each session its `StepResult`. It feeds an engine only the media kinds
its `spec.media` declares.

Drop rules of the per-session backlog:
- audio waiting for the model is bounded by `max_backlog_s`; beyond it the oldest waiting chunks
  are dropped, counted, and the next chunk fed is flagged as a discontinuity so the engine never
  stitches across the hole;
- video: the latest frames win. `MAX_WAITING_FRAMES` wait at most (two, so the frames of one
  burst — a second of a fragmented MP4 — both reach the engine); a newer one pushes out the oldest
  (counted in `frames_dropped`). Frames arrive already sampled to `spec.video_fps` (the session
  applies `frames.FrameSampler` where a frame enters, before decoding). Video is always dropped
  before audio: a waiting frame never holds audio back.

A failed step fails only the sessions it was about: an engine's `PartialStepError` names them;
any other exception of a batched step is retried session by session. `stop` calls the engine's
optional `shutdown` so its workers end with the server.
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

from patchstream.model.api import (
    AudioChunk,
    Engine,
    Media,
    MediaKind,
    SessionControl,
    SessionOptions,
    StepResult,
    VideoFrame,
    samples_to_seconds,
    seconds_to_samples,
    shutdown_engine,
    step_each,
)
from patchstream.streaming.config import SchedulerConfig

log = logging.getLogger(__name__)

MAX_WAITING_FRAMES = 2  # video frames waiting for the model per session; the oldest is dropped first


@dataclass
class SessionSlot:
    """The scheduler's view of one session: its engine state and waiting media."""

    slot_id: int  # unique per scheduler
    state: object  # the engine's per-session state; touched only on the model thread
    on_result: Callable[[StepResult], None]  # called on the event loop with each step's result
    on_failure: Callable[[Exception], None]  # called on the event loop if the engine fails
    max_backlog_samples: int  # audio bound of `backlog`; the oldest chunks go beyond it
    backlog: deque[AudioChunk] = field(default_factory=deque)  # audio waiting for the model
    backlog_samples: int = 0  # samples in `backlog`
    video: deque[VideoFrame] = field(default_factory=deque)  # frames waiting for the model (≤ MAX_WAITING_FRAMES, latest win)
    frames_dropped: int = 0  # waiting frames replaced by a newer one before the model took them
    last_step: int = -1  # index of the scheduler step that last advanced this session
    pending: bool = False  # the engine's last result asked for another step without new media
    finishing: bool = False  # no step after finish was requested
    failed: bool = False  # the engine failed on it: no more steps

    @property
    def ready(self) -> bool:
        return not self.finishing and not self.failed

    @property
    def backlog_s(self) -> float:
        return samples_to_seconds(self.backlog_samples)

    def take_media(self) -> list[Media]:
        """Everything waiting, in media-time order, leaving nothing waiting."""
        media: list[Media] = [*self.backlog, *self.video]
        self.backlog.clear()
        self.backlog_samples = 0
        self.video.clear()
        return sorted(media, key=lambda item: item.start_sample)


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
        self.steps_run = 0  # steps taken; also the fairness clock (`SessionSlot.last_step`)
        self.batched_sessions = 0  # sessions advanced, summed over steps (the benchmark's mean batch)
        self.busy_s = 0.0  # model-thread seconds spent in steps (the benchmark's real-time factor)
        # Called on the loop after each step with (model seconds, audio seconds stepped):
        # the server's capacity model and metrics (issue 13).
        self.step_observers: list[Callable[[float, float], None]] = []

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
        try:
            await self._on_model_thread(shutdown_engine, self.engine)
        except Exception:  # noqa: BLE001 - stopping goes on
            log.exception("engine shutdown failed")
        self._executor.shutdown(wait=True)

    async def warm_up(self, seconds: float = 2.0) -> None:
        """Run one full session through the engine so the first client pays no start-up cost."""
        def run() -> None:
            state = self.engine.open(SessionOptions())
            n = seconds_to_samples(seconds) // self.engine.spec.samples_per_chunk * self.engine.spec.samples_per_chunk
            rng = np.random.default_rng(0)
            self.engine.feed(state, AudioChunk((rng.standard_normal(n) * 1e-3).astype(np.float32), 0))
            if MediaKind.VIDEO in self.engine.spec.media:
                self.engine.feed(state, VideoFrame(np.zeros((48, 48, 3), np.uint8), n // 2))
            self.engine.step([state])
            self.engine.finish(state)
            self.engine.close(state)

        await self._on_model_thread(run)

    async def open(
        self,
        options: SessionOptions,
        on_result: Callable[[StepResult], None],
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
        slot = SessionSlot(next(self._ids), state, on_result, on_failure, seconds_to_samples(max_backlog_s))
        self._slots[slot.slot_id] = slot
        return slot

    def _close_orphan(self, opening: asyncio.Future) -> None:
        if not opening.cancelled() and opening.exception() is None:
            self._executor.submit(self.engine.close, opening.result())

    def submit(self, slot: SessionSlot, media: Media) -> int:
        """Queue media for the model; returns how many audio samples had to be dropped (usually 0).

        Media of a kind the engine did not declare is a server bug: ValueError.
        """
        kind = MediaKind.VIDEO if isinstance(media, VideoFrame) else MediaKind.AUDIO
        if kind not in self.engine.spec.media:
            raise ValueError(f"engine {self.engine.spec.name!r} takes no {kind}")
        if not slot.ready:
            return 0
        if isinstance(media, VideoFrame):
            self._submit_frame(slot, media)
            return 0
        chunk = media
        slot.backlog.append(chunk)  # the chunker already flags time jumps as discontinuities
        slot.backlog_samples += len(chunk.samples)
        dropped = 0
        while slot.backlog_samples > slot.max_backlog_samples and len(slot.backlog) > 1:
            oldest = slot.backlog.popleft()
            slot.backlog_samples -= len(oldest.samples)
            dropped += len(oldest.samples)
            slot.backlog[0] = dataclasses.replace(slot.backlog[0], discontinuity=True)
        self._wake.set()
        return dropped

    def _submit_frame(self, slot: SessionSlot, frame: VideoFrame) -> None:
        """Latest frame wins (the frame is already sampled to the engine's rate)."""
        slot.video.append(frame)
        if len(slot.video) > MAX_WAITING_FRAMES:
            slot.video.popleft()  # the oldest waiting frame makes room
            slot.frames_dropped += 1
        self._wake.set()

    async def control(self, slot: SessionSlot, control: SessionControl) -> None:
        """Change a session's prompt or instruction (EngineError when the engine cannot)."""
        await self._on_model_thread(self.engine.control, slot.state, control)

    async def finish(self, slot: SessionSlot) -> StepResult:
        """Feed what is waiting and let the engine commit everything; no more steps afterwards."""
        slot.finishing = True
        media = slot.take_media()

        def run() -> StepResult:
            for item in media:
                self.engine.feed(slot.state, item)
            return self.engine.finish(slot.state)

        return await self._on_model_thread(run)

    async def close(self, slot: SessionSlot) -> None:
        """Forget the session and free its engine state (safe to call twice)."""
        if self._slots.pop(slot.slot_id, None) is None:
            return
        slot.finishing = True
        slot.take_media()
        try:
            await self._on_model_thread(self.engine.close, slot.state)
        except Exception:  # a failing close must not take the server down
            log.exception("engine close failed for slot %s", slot.slot_id)

    def _pick(self) -> list[SessionSlot]:
        spec = self.engine.spec
        ready = [
            slot
            for slot in self._slots.values()
            if slot.ready and (slot.backlog_samples >= max(spec.min_step_samples, 1) or slot.video or slot.pending)
        ]
        # Fairness: the session served least recently goes first. ("Most behind first" would let
        # a client sending faster than real time win every batch and starve live sessions.)
        # The sort is stable: among sessions never served, the one opened first goes first.
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
        work = [(slot, slot.take_media()) for slot in batch]
        elapsed = [0.0]

        def run() -> list[StepResult | Exception]:
            started = time.perf_counter()
            try:
                return step_all()
            finally:
                elapsed[0] = time.perf_counter() - started
                self.busy_s += elapsed[0]

        def step_all() -> list[StepResult | Exception]:
            results: list[StepResult | Exception | None] = [None] * len(work)
            for index, (slot, media) in enumerate(work):
                try:
                    for item in media:
                        self.engine.feed(slot.state, item)
                except Exception as error:  # noqa: BLE001 - this session's audio, this session's error
                    results[index] = error
            fed = [index for index, result in enumerate(results) if result is None]
            for index, update in zip(fed, step_each(self.engine, [work[i][0].state for i in fed])):
                results[index] = update
            return results

        try:
            results = await self._on_model_thread(run)
        except Exception as error:  # noqa: BLE001 - the model thread itself failed: all pay
            results = [error] * len(work)
        self.steps_run += 1
        self.batched_sessions += len(work)
        audio_s = samples_to_seconds(
            sum(len(item.samples) for _, media in work for item in media if isinstance(item, AudioChunk))
        )
        for observe in self.step_observers:
            observe(elapsed[0], audio_s)
        for (slot, _), result in zip(work, results):
            slot.last_step = self.steps_run
            slot.pending = isinstance(result, StepResult) and result.pending
            if slot.slot_id in self._slots:
                self._deliver(slot, result)

    def _deliver(self, slot: SessionSlot, result: StepResult | Exception) -> None:
        """Hand a step's outcome to its session; a session's failing callback fails that session."""
        try:
            if isinstance(result, Exception):
                raise result
            slot.on_result(result)
        except Exception as error:  # noqa: BLE001 - never let one session stop the scheduler
            slot.failed = True
            log.error("engine failed on slot %s: %r", slot.slot_id, error)
            try:
                slot.on_failure(error)
            except Exception:  # noqa: BLE001
                log.exception("failure callback of slot %s failed", slot.slot_id)
