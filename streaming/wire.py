"""Sans-I/O parsing and validation of client → server messages of the native protocol.

Text frames are JSON control messages (`start`, `stop`); binary frames are audio bytes. Every
problem becomes a `ProtocolError` with a code from docs/protocol.md; nothing here does I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from patchstream.model.api import SessionOptions
from patchstream.streaming.decode import ENCODINGS, AudioFormat, DecodeError
from patchstream.streaming.events import CodedError

MAX_CONTROL_BYTES = 64 * 1024  # a control message larger than this is not a control message
MAX_PROMPT_CHARS = 2_000  # bias text; longer prompts only slow decoding down


class ProtocolError(CodedError):
    """A client message broke the protocol."""


@dataclass(frozen=True)
class StartMessage:
    """`start`: what the client will send and what it wants back."""

    audio: AudioFormat  # how the binary frames are encoded
    options: SessionOptions  # language, task, prompt
    interim_results: bool = True  # send `caption.partial` events
    stats: bool = True  # send periodic `stats` events


@dataclass(frozen=True)
class StopMessage:
    """`stop`: no more audio; flush, send the last finals, then `ended`."""


ControlMessage = StartMessage | StopMessage


def _require(condition: bool, code: str, message: str) -> None:
    if not condition:
        raise ProtocolError(code, message)


def _parse_audio_format(audio: object) -> AudioFormat:
    _require(isinstance(audio, dict), "bad_start", "`audio` must be an object describing the stream")
    encoding = audio.get("encoding")
    _require(
        encoding in ENCODINGS,
        "unsupported_encoding",
        f"unknown audio encoding {encoding!r}; use one of {', '.join(ENCODINGS)}",
    )
    for key in ("sample_rate", "channels"):
        value = audio.get(key)
        _require(
            value is None or (isinstance(value, int) and not isinstance(value, bool)),
            "bad_start",
            f"`audio.{key}` must be an integer",
        )
    container = audio.get("container")
    _require(container is None or isinstance(container, str), "bad_start", "`audio.container` must be a string")
    try:
        fmt = AudioFormat(
            encoding=encoding,
            sample_rate=audio.get("sample_rate"),
            channels=audio.get("channels"),
            container=container,
        )  # the constructor validates rates, channel counts and container names
    except DecodeError as error:
        raise ProtocolError(error.code, error.message) from None
    return fmt


def _parse_options(message: dict) -> SessionOptions:
    language = message.get("language", "en")
    _require(isinstance(language, str) and 0 < len(language) <= 16, "bad_start", "`language` must be a short code like \"en\"")
    task = message.get("task", "transcribe")
    _require(task == "transcribe", "unsupported_task", f"task {task!r} is not supported; use \"transcribe\"")
    prompt = message.get("prompt", "")
    _require(isinstance(prompt, str), "bad_start", "`prompt` must be a string")
    _require(len(prompt) <= MAX_PROMPT_CHARS, "bad_start", f"`prompt` is longer than {MAX_PROMPT_CHARS} characters")
    return SessionOptions(language=language, task=task, prompt=prompt)


def _flag(message: dict, key: str, default: bool) -> bool:
    value = message.get(key, default)
    _require(isinstance(value, bool), "bad_start", f"`{key}` must be true or false")
    return value


def parse_control(text: str) -> ControlMessage:
    """Parse one text frame into a control message, or raise ProtocolError."""
    _require(len(text) <= MAX_CONTROL_BYTES, "bad_message", "control message too large")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProtocolError("bad_json", f"text frame is not valid JSON: {error.msg}") from None
    _require(isinstance(message, dict), "bad_message", "a control message must be a JSON object")
    kind = message.get("type")
    if kind == "start":
        return StartMessage(
            audio=_parse_audio_format(message.get("audio")),
            options=_parse_options(message),
            interim_results=_flag(message, "interim_results", True),
            stats=_flag(message, "stats", True),
        )
    if kind == "stop":
        return StopMessage()
    raise ProtocolError("unknown_message", f"unknown message type {kind!r}; expected \"start\" or \"stop\"")
