"""The server's agent assist: its base config, its text models and the thread assist runs on.

It is: what a server hands every session (`SessionContext.assist`): `open` turns a `start`'s
`assist` option into the session's `CallAssistant` (or None when the session gets no assist),
and `executor` is the one thread that every session's analyses and summaries run on, so
embedding text never runs on the event loop or the model thread. It is not: a scheduler; a
session submits its own work in caption order.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

from patchstream.model.api import TextModels
from patchstream.streaming.assist.assistant import CallAssistant, check_models
from patchstream.streaming.assist.config import AssistConfig, parse_assist

ASSIST_THREADS = 1  # analyses cost about a millisecond a caption: one thread serves every session


@dataclass(frozen=True)
class AssistService:
    """Agent assist as one server offers it."""

    base: AssistConfig  # what every session gets (`--assist-config`); a session's `assist` adds to it
    models: TextModels  # loaded at start-up; None where the `assist` extra is missing
    executor: Executor  # the assist thread

    def __post_init__(self) -> None:
        check_models(self.base, self.models)

    def open(self, raw: object) -> CallAssistant | None:
        """The assistant of a session whose `start` carried `raw` as `assist`; ValueError if malformed."""
        config = parse_assist(raw, self.base)
        return CallAssistant(config, self.models) if config.enabled else None
