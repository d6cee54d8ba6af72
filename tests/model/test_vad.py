"""Streaming Silero VAD: scoring in pieces equals one pass, and streams never share state."""

from __future__ import annotations

import numpy as np
import pytest

from patchstream.bench.speech_set import SpeechSetError, load_speech_set, read_samples

pytest.importorskip("faster_whisper")

from patchstream.model.vad import VAD_WINDOW, StreamingVad, VadState  # noqa: E402


@pytest.fixture(scope="module")
def vad() -> StreamingVad:
    return StreamingVad()


@pytest.fixture(scope="module")
def quiet_speech() -> np.ndarray:
    """A speaker with a cold, quiet at the start: the case a reset state scored as silence."""
    try:
        files = {f.name: f for f in load_speech_set()}
    except SpeechSetError as error:
        pytest.skip(str(error))
    samples = read_samples(files["mfa_cold_corpus.wav"].path)
    return samples[: len(samples) // VAD_WINDOW * VAD_WINDOW]


def test_scoring_in_steps_equals_scoring_the_whole_stream(vad, quiet_speech):
    whole = vad.score(VadState(), quiet_speech)
    state, pieces = VadState(), []
    step = 8 * VAD_WINDOW  # about a quarter second, as the engine steps
    for start in range(0, len(quiet_speech), step):
        pieces.append(vad.score(state, quiet_speech[start : start + step]))
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)
    assert (whole[:100] >= 0.5).any()  # the opening sentence is heard as speech


def test_interleaved_streams_do_not_leak_into_each_other(vad, quiet_speech):
    alone = vad.score(VadState(), quiet_speech[: 64 * VAD_WINDOW])
    speech_state, noise_state = VadState(), VadState()
    noise = (0.3 * np.random.default_rng(3).standard_normal(64 * VAD_WINDOW)).astype(np.float32)
    mixed = []
    for start in range(0, 64 * VAD_WINDOW, 8 * VAD_WINDOW):
        vad.score(noise_state, noise[start : start + 8 * VAD_WINDOW])
        mixed.append(vad.score(speech_state, quiet_speech[start : start + 8 * VAD_WINDOW]))
    np.testing.assert_allclose(np.concatenate(mixed), alone, atol=1e-5)


def test_nothing_to_score_returns_nothing(vad):
    assert vad.score(VadState(), np.zeros(0, np.float32)).shape == (0,)
