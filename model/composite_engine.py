"""One engine made of two: a caption engine for the audio, an interpretation engine for the video.

It is: how a server that runs one engine serves captions and interpretations in one session.
`feed` routes each `AudioChunk` to the caption engine and each `VideoFrame` to the interpretation
engine; `step` advances both for the batch and merges their `StepResult`s (captions from one,
interpretations and dropped-frame counts from the other). The caption engine is stepped for a
session only once it has `spec.min_step_samples` of new audio, as the scheduler would do alone,
so frames arriving never make Whisper decode more often. `control` sends the prompt to the caption
engine and the instruction and interpretation kinds to the interpretation engine. The spec is
the union: audio and video, the caption engine's batching and step size, the interpretation
engine's frame rate, frame budget and kinds. The scheduler treats it like any other engine.
A session that fails in either engine fails alone: both engines are stepped for the whole batch
whatever happens to one session, and the failures come back in a `PartialStepError` beside the
other sessions' results (committed words are never lost to another session's bad frame).
`shutdown` shuts both engines down.

It is not: a scheduler (both engines run on the scheduler's model thread; an interpretation
engine that needs time, like the OCR, runs its work on a worker of its own) and it cannot
compose two engines that both take video.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from patchstream.model.api import (
    AudioChunk,
    CaptionUpdate,
    Engine,
    EngineError,
    EngineSpec,
    Media,
    MediaKind,
    PartialStepError,
    SessionControl,
    SessionOptions,
    StepResult,
    shutdown_engine,
    step_each,
)


@dataclass
class CompositeSession:
    """One session in both engines."""

    captions: object  # the caption engine's state
    vision: object  # the interpretation engine's state
    new_audio: int = 0  # samples fed to the caption engine since its last step
    last: CaptionUpdate = CaptionUpdate()  # its last update: repeated (tentative words and all) when it is not stepped


class CompositeEngine:
    """Caption engine + interpretation engine (see the module docstring)."""

    def __init__(self, captions: Engine, vision: Engine):
        if MediaKind.VIDEO in captions.spec.media:
            raise EngineError(f"{captions.spec.name} already takes video; it cannot be composed with {vision.spec.name}")
        self.captions, self.vision = captions, vision
        self.spec = EngineSpec(
            name=f"{captions.spec.name}+{vision.spec.name}",
            media=captions.spec.media | {MediaKind.VIDEO},
            samples_per_chunk=captions.spec.samples_per_chunk,
            video_fps=vision.spec.video_fps,
            max_batch=captions.spec.max_batch,
            min_step_samples=captions.spec.min_step_samples,
            frame_soft_tokens=vision.spec.frame_soft_tokens,
            interpretations=captions.spec.interpretations | vision.spec.interpretations,
        )

    def open(self, options: SessionOptions) -> CompositeSession:
        wanted = options.interpretations
        captions = self.captions.open(dataclasses.replace(options, instruction="", interpretations=None))
        try:
            vision_kinds = None if wanted is None else wanted & self.vision.spec.interpretations
            vision = self.vision.open(dataclasses.replace(options, prompt="", interpretations=vision_kinds))
        except Exception:
            self.captions.close(captions)
            raise
        return CompositeSession(captions, vision)

    def feed(self, state: CompositeSession, media: Media) -> None:
        if isinstance(media, AudioChunk):
            self.captions.feed(state.captions, media)
            state.new_audio += len(media.samples)
        else:
            self.vision.feed(state.vision, media)

    def control(self, state: CompositeSession, control: SessionControl) -> None:
        if control.prompt is not None:
            self.captions.control(state.captions, SessionControl(prompt=control.prompt))
        if control.instruction is not None or control.interpretations is not None:
            self.vision.control(state.vision, SessionControl(None, control.instruction, control.interpretations))

    def step(self, states: Sequence[CompositeSession]) -> list[StepResult]:
        due = [state for state in states if state.new_audio >= max(1, self.captions.spec.min_step_samples)]
        stepped: dict[int, StepResult | Exception] = {}
        for state, result in zip(due, step_each(self.captions, [state.captions for state in due])):
            state.new_audio = 0
            stepped[id(state)] = result
            if not isinstance(result, Exception):
                state.last = result.captions
        results: list[StepResult | Exception] = []
        for state, vision in zip(states, step_each(self.vision, [state.vision for state in states])):
            captions = stepped.get(id(state))
            if isinstance(captions, Exception) or isinstance(vision, Exception):
                results.append(captions if isinstance(captions, Exception) else vision)
            elif captions is None:
                # Not stepped: the last update again, minus what it committed (commits are never repeated).
                last = dataclasses.replace(state.last, committed=(), segment_end=False)
                results.append(StepResult(last, vision.interpretations, vision.dropped_frames))
            else:
                results.append(
                    StepResult(captions.captions, captions.interpretations + vision.interpretations, vision.dropped_frames)
                )
        if any(isinstance(result, Exception) for result in results):
            raise PartialStepError(results)
        return results

    def finish(self, state: CompositeSession) -> StepResult:
        captions = self.captions.finish(state.captions)
        vision = self.vision.finish(state.vision)
        return StepResult(captions.captions, captions.interpretations + vision.interpretations, vision.dropped_frames)

    def close(self, state: CompositeSession) -> None:
        try:
            self.captions.close(state.captions)
        finally:
            self.vision.close(state.vision)

    def shutdown(self) -> None:
        try:
            shutdown_engine(self.captions)
        finally:
            shutdown_engine(self.vision)
