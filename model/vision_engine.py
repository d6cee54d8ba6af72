"""The CPU interpretation engine: on-screen text (OCR) and scene changes from video frames.

It is: an `Engine` that takes `VideoFrame`s only and emits two kinds of interpretation.
- `scene`: "scene changed" at the first sampled frame of a new scene (`scene.py`), final at once,
  `frame_times` = (the last frame of the old scene, the first of the new); the true cut lies
  between them, so it is reported within one sampled frame.
- `text`: the text on screen (`ocr.py`), one interpretation per distinct text: a partial when it
  first appears, a final when it changes or disappears (its `end` is the last frame it was read
  in) or when the stream ends. Frames that look like the last one read are not read again, and
  text that reads the same as what is on screen (after normalising case and spacing, or nearly
  the same: one character misread) is not news; so a slide shown for a minute costs one OCR.
OCR runs on a worker thread of its own (onnxruntime on one thread by default), never on the
model thread, which never waits for it: `step` hands the frames waiting in every session to the
worker as one batch and returns the results of the batch before it, so a caption engine composed
beside this one (`composite_engine.py`) is never held up by OCR. While a batch runs, each session
keeps only its newest frame for the next one (latest frame wins; a replaced frame that showed a
different picture is counted in `StepResult.dropped_frames`). `finish` does not wait either: a
session's frame still being read, or not yet read, when its stream ends is dropped (counted; a
frame showing what was already read loses nothing) and its text closes as last read. A frame the
OCR fails on is dropped alone (counted, logged); the other frames of the batch are read. Scene
detection is cheap and runs inside `feed`. `shutdown` frees the OCR worker and its model.

It is not: a captioner (no audio), not a describer (it takes no instruction; `control` can change
which kinds a session gets) and not a video decoder (frames arrive decoded, sized by the server).
"""

from __future__ import annotations

import difflib
import logging
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from patchstream.model.api import (
    EngineChoice,
    EngineError,
    EngineSpec,
    InterpretationUpdate,
    Media,
    MediaKind,
    SessionControl,
    SessionOptions,
    StepResult,
    VideoFrame,
)
from patchstream.model.ocr import OcrLine, OcrReader
from patchstream.model.scene import SceneConfig, SceneDetector, fine_thumbnail, same_picture, thumbnail

log = logging.getLogger(__name__)

TEXT, SCENE = "text", "scene"  # the interpretation kinds this engine offers
VISION_KINDS = {"ocr": TEXT, "scenes": SCENE}  # `--vision` names → kinds
SAME_TEXT_RATIO = 0.9  # normalised texts at least this similar are the same text (OCR jitter)


@dataclass(frozen=True)
class VisionEngineConfig:
    """Knobs of the interpretation engine."""

    kinds: frozenset[str] = frozenset({TEXT, SCENE})  # what it can emit
    fps: float = 1.0  # frames per media second it asks the server for
    frame_soft_tokens: int = 280  # frame budget: 280 × 48² px ≈ 1056x576 for 16:9, enough for slide text
    ocr_threads: int = 1  # onnxruntime threads of the OCR worker
    scene: SceneConfig = SceneConfig()


class TextReader(Protocol):
    """What reads a frame's text: `ocr.OcrReader`, or a test's stand-in."""

    def read(self, pixels: np.ndarray) -> list[OcrLine]: ...


@dataclass
class _OpenText:
    """The text on screen now: one interpretation, partial until it changes."""

    interpretation_id: str  # t0, t1, ...
    text: str  # lines joined by newlines
    key: str  # normalised, for comparing
    start: float  # media seconds of the first frame it was read in
    end: float  # media seconds of the last frame it was read in


@dataclass
class VisionSession:
    """Per-session state."""

    kinds: frozenset[str]  # the kinds this session wants
    scenes: SceneDetector  # its previous thumbnail
    last_frame_s: float | None = None  # media time of the previous frame (the old side of a cut)
    scene_count: int = 0  # scene ids given
    text_count: int = 0  # text ids given
    waiting: tuple[VideoFrame, np.ndarray] | None = None  # the newest frame not yet read, its fine thumbnail
    dropped: int = 0  # frames replaced while waiting, since the last result
    read_thumb: np.ndarray | None = None  # fine thumbnail of the last frame handed to OCR
    reading: bool = False  # a frame of this session is in the batch now running
    text: _OpenText | None = None  # the text on screen
    updates: list[InterpretationUpdate] = field(default_factory=list)  # ready for the next result
    done: bool = False  # finished or closed: no more reads, a read still running is ignored


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


class VisionEngine:
    """OCR and scene changes (see the module docstring)."""

    def __init__(
        self, config: VisionEngineConfig = VisionEngineConfig(), reader: Callable[[int], TextReader] = OcrReader
    ):
        """`reader(threads)` builds the text reader, on the OCR worker (RapidOCR by default)."""
        self.config = config
        self.spec = EngineSpec(
            name="vision(" + ",".join(sorted(config.kinds)) + ")",
            media=frozenset({MediaKind.VIDEO}),
            video_fps=config.fps,
            max_batch=64,
            frame_soft_tokens=config.frame_soft_tokens,
            interpretations=config.kinds,
        )
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocr") if TEXT in config.kinds else None
        # Built on the worker thread it runs on (onnxruntime sessions stay on one thread).
        self._reader: TextReader | None = (
            self._worker.submit(reader, config.ocr_threads).result() if self._worker else None
        )
        self._sessions: list[VisionSession] = []  # open sessions (their waiting frames join the next batch)
        self._batch: Future | None = None  # the OCR batch running now
        self._batch_frames: list[tuple[VisionSession, VideoFrame]] = []  # what it reads

    # -- sessions --------------------------------------------------------------------------------

    def open(self, options: SessionOptions) -> VisionSession:
        if options.instruction:
            raise EngineError("the vision engine reads text and finds cuts; it takes no instructions")
        state = VisionSession(self._kinds(options.interpretations), SceneDetector(self.config.scene))
        self._sessions.append(state)
        return state

    def _kinds(self, wanted: frozenset[str] | None) -> frozenset[str]:
        if wanted is None:
            return self.config.kinds
        unknown = wanted - self.config.kinds
        if unknown:
            raise EngineError(f"no {', '.join(sorted(unknown))} interpretations here; offered: {sorted(self.config.kinds)}")
        return frozenset(wanted)

    def control(self, state: VisionSession, control: SessionControl) -> None:
        if control.instruction:
            raise EngineError("the vision engine takes no instructions; change `interpretations` instead")
        if control.interpretations is not None:
            state.kinds = self._kinds(control.interpretations)
            if TEXT not in state.kinds:
                self._close_text(state)

    def close(self, state: VisionSession) -> None:
        self._retire(state)
        state.updates.clear()

    def _retire(self, state: VisionSession) -> None:
        """No more reads for this session; a read of its frame still running will be ignored."""
        state.done = True
        if state in self._sessions:
            self._sessions.remove(state)
        state.waiting = None

    def shutdown(self) -> None:
        """Free the OCR worker and its onnxruntime sessions (after the batch running, if any)."""
        if self._worker is None:
            return
        worker, self._worker = self._worker, None
        worker.submit(self._free_reader)  # on the thread that made it, after any batch queued before
        worker.shutdown(wait=True)
        self._batch, self._batch_frames = None, []

    def _free_reader(self) -> None:
        self._reader = None

    # -- media -----------------------------------------------------------------------------------

    def feed(self, state: VisionSession, media: Media) -> None:
        if not isinstance(media, VideoFrame):
            return  # audio is the caption engine's
        cut = state.scenes.push(thumbnail(media.pixels))  # always pushed: kinds may change mid-session
        if cut and SCENE in state.kinds:
            previous = state.last_frame_s if state.last_frame_s is not None else media.start_s
            state.updates.append(
                InterpretationUpdate(
                    f"s{state.scene_count}", "scene changed", previous, media.start_s, True, SCENE,
                    (previous, media.start_s),
                )
            )
            state.scene_count += 1
        state.last_frame_s = media.start_s
        if TEXT in state.kinds and self._reader is not None:
            fine = fine_thumbnail(media.pixels)
            if state.waiting is not None and not same_picture(state.waiting[1], fine):
                state.dropped += 1  # latest frame wins; replacing a frame with the same picture loses nothing
            state.waiting = (media, fine)

    # -- steps -----------------------------------------------------------------------------------

    def step(self, states: Sequence[VisionSession]) -> list[StepResult]:
        self._collect()
        self._start_batch()
        return [self._result(state) for state in states]

    def finish(self, state: VisionSession) -> StepResult:
        """Close this session's text as last read, without waiting for the OCR (see the docstring)."""
        self._collect()  # a batch already done still counts
        if state.reading:
            state.dropped += 1  # its frame is being read: the read will be ignored
        if not state.done and self._take_unread(state) is not None:
            state.dropped += 1  # a new picture nobody will read now
        self._retire(state)
        self._close_text(state)
        return self._result(state)

    def _result(self, state: VisionSession) -> StepResult:
        updates, state.updates = tuple(state.updates), []
        dropped, state.dropped = state.dropped, 0
        return StepResult(interpretations=updates, dropped_frames=dropped)

    def _start_batch(self) -> None:
        """Hand every session's newest unread frame to the OCR worker, unless a batch is running."""
        if self._batch is not None or self._worker is None:
            return
        batch = []
        for state in self._sessions_waiting():
            frame = self._take_unread(state)
            if frame is not None:
                state.reading = True
                batch.append((state, frame))
        if batch:
            self._batch_frames = batch
            self._batch = self._worker.submit(lambda: [self._read(frame) for _, frame in batch])

    def _read(self, frame: VideoFrame) -> list[OcrLine] | Exception:
        """OCR worker: one frame's lines, or what went wrong with this frame alone."""
        try:
            return self._reader.read(frame.pixels)
        except Exception as error:  # noqa: BLE001 - one frame's failure is that frame's, never the batch's
            return error

    def _take_unread(self, state: VisionSession) -> VideoFrame | None:
        """The session's waiting frame if it needs reading; one showing what was read only extends the text."""
        if state.waiting is None:
            return None
        (frame, fine), state.waiting = state.waiting, None
        if state.read_thumb is not None and same_picture(state.read_thumb, fine):
            self._extend_text(state, frame.start_s)  # shows what was read: no OCR
            return None
        state.read_thumb = fine
        return frame

    def _sessions_waiting(self) -> list[VisionSession]:
        return [state for state in self._sessions if state.waiting is not None and not state.reading]

    def _collect(self) -> None:
        """Apply the running batch's results if it is done; never waits for it."""
        if self._batch is None or not self._batch.done():
            return
        batch, frames = self._batch, self._batch_frames
        self._batch, self._batch_frames = None, []
        try:
            reads = batch.result()
        except Exception as error:  # noqa: BLE001 - the worker itself failed: every frame of it is lost
            reads = [error] * len(frames)
        for (state, frame), lines in zip(frames, reads):
            state.reading = False
            if state.done:
                continue
            if isinstance(lines, Exception):
                log.warning("OCR failed on a frame at %.2f s: %r; the frame is dropped", frame.start_s, lines)
                state.dropped += 1
                state.read_thumb = None  # read the next frame, even if it looks the same
                continue
            self._apply_read(state, frame, lines)

    # -- text ------------------------------------------------------------------------------------

    def _apply_read(self, state: VisionSession, frame: VideoFrame, lines: list[OcrLine]) -> None:
        text = "\n".join(line.text for line in lines)
        key = _normalise(text)
        current = state.text
        if current is not None and difflib.SequenceMatcher(None, current.key, key).ratio() >= SAME_TEXT_RATIO:
            current.end = max(current.end, frame.start_s)
            return
        self._close_text(state)
        if not key or TEXT not in state.kinds:
            return
        state.text = _OpenText(f"t{state.text_count}", text, key, frame.start_s, frame.start_s)
        state.text_count += 1
        state.updates.append(
            InterpretationUpdate(state.text.interpretation_id, text, frame.start_s, frame.start_s, False, TEXT, (frame.start_s,))
        )

    def _extend_text(self, state: VisionSession, time_s: float) -> None:
        if state.text is not None:
            state.text.end = max(state.text.end, time_s)

    def _close_text(self, state: VisionSession) -> None:
        """The text on screen went away (or the stream ended): its final, ending at the last frame it was read in."""
        current, state.text = state.text, None
        if current is None:
            return
        state.updates.append(
            InterpretationUpdate(
                current.interpretation_id, current.text, current.start, current.end, True, TEXT,
                (current.start, current.end) if current.end > current.start else (current.start,),
            )
        )


def build(choice: EngineChoice) -> VisionEngine:
    """Registry entry: `choice.vision` names the parts ("ocr", "scenes")."""
    unknown = set(choice.vision) - set(VISION_KINDS)
    if unknown:
        raise EngineError(f"unknown --vision part(s) {sorted(unknown)}; choose from {sorted(VISION_KINDS)}")
    kinds = frozenset(VISION_KINDS[name] for name in choice.vision)
    known = {k: v for k, v in choice.options.items() if k in ("fps", "frame_soft_tokens", "ocr_threads")}
    return VisionEngine(VisionEngineConfig(kinds=kinds, **known))
