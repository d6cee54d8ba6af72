"""Fixtures of the protocol-adapter tests: the real-speech ones share the model tests' engine and set."""

from tests.model.conftest import real_speech, whisper_engine  # noqa: F401 - fixtures, re-exported
