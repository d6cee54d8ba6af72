"""Streaming voice activity detection: the Silero v6 model that faster-whisper ships, per stream.

It is: the ONNX session (shared, loaded once) plus a per-stream `VadState` that carries Silero's
LSTM state and its 64-sample look-back from one call to the next. Silero is recurrent: scoring a
stream a few windows at a time with a fresh state each call (or several streams in one call,
where one stream's state runs on into the next) gives far lower speech probabilities than the
same audio scored in one pass; on a quiet speaker with a cold it scored whole sentences as
silence. With the state carried, scoring in pieces equals scoring the whole stream.

It is not: a speech/pause decision (the engine applies thresholds) and not thread-safe.
Nothing downloads: the model file is inside the faster-whisper wheel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

VAD_WINDOW = 512  # samples per Silero decision (32 ms at 16 kHz)
VAD_CONTEXT = 64  # samples of the previous window Silero v6 sees with each window
STATE_SHAPE = (1, 1, 128)  # Silero v6 LSTM hidden and cell state


@dataclass
class VadState:
    """One stream's recurrent state between calls."""

    hidden: np.ndarray = field(default_factory=lambda: np.zeros(STATE_SHAPE, np.float32))
    cell: np.ndarray = field(default_factory=lambda: np.zeros(STATE_SHAPE, np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(VAD_CONTEXT, np.float32))


class StreamingVad:
    """Scores whole 512-sample windows of many independent streams."""

    def __init__(self) -> None:
        from faster_whisper.utils import get_assets_path
        from faster_whisper.vad import SileroVADModel

        model = SileroVADModel(os.path.join(get_assets_path(), "silero_vad_v6.onnx"))
        self._session = model.session

    def score(self, state: VadState, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each whole window of `audio` (length a multiple of 512),
        continuing the stream that `state` has seen so far; updates `state`."""
        windows = np.asarray(audio, np.float32).reshape(-1, VAD_WINDOW)
        if len(windows) == 0:
            return np.zeros(0, np.float32)
        look_back = np.concatenate([state.context[None], windows[:-1, -VAD_CONTEXT:]])
        probs, state.hidden, state.cell = self._session.run(
            None, {"input": np.concatenate([look_back, windows], axis=1), "h": state.hidden, "c": state.cell}
        )
        state.context = windows[-1, -VAD_CONTEXT:].copy()
        return np.asarray(probs, np.float32).reshape(-1)
