"""Which websocket path speaks which protocol: the native one, or a `ProtocolAdapter`'s.

`adapter_for(path)` answers with a fresh adapter for a session on that path (None: native), or
raises `RouteError` (an HTTP status and a message) for a path the server does not serve. The
server (`server.py`) asks before the websocket handshake, so a wrong path is refused over HTTP.
"""

from __future__ import annotations

import http
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from patchstream.streaming.adapters.adapter import ProtocolAdapter
from patchstream.streaming.adapters.audiohook import AUDIOHOOK_PATH, AudioHookAdapter
from patchstream.streaming.adapters.openai_realtime import REALTIME_PATH, TRANSCRIPTION_INTENT, OpenAIRealtimeAdapter
from patchstream.streaming.adapters.twilio import TWILIO_PATH, TwilioAdapter
from patchstream.streaming.protocol import NATIVE_STREAM_PATH


class RouteError(Exception):
    """The path is not served: answer the handshake with this status."""

    def __init__(self, status: http.HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _realtime(query: dict[str, list[str]]) -> ProtocolAdapter:
    intent = query.get("intent", [""])[0]
    if intent != TRANSCRIPTION_INTENT:
        raise RouteError(
            http.HTTPStatus.BAD_REQUEST,
            f"only transcription sessions are served here: connect to {REALTIME_PATH}?intent={TRANSCRIPTION_INTENT}",
        )
    return OpenAIRealtimeAdapter()


ADAPTERS: dict[str, Callable[[dict[str, list[str]]], ProtocolAdapter]] = {
    TWILIO_PATH: lambda query: TwilioAdapter(),
    AUDIOHOOK_PATH: lambda query: AudioHookAdapter(),
    REALTIME_PATH: _realtime,
}
PATHS = (NATIVE_STREAM_PATH, *ADAPTERS)  # every websocket path served


def adapter_for(path: str) -> ProtocolAdapter | None:
    """A new adapter for a session on `path` (with its query); None for the native protocol."""
    parts = urlsplit(path)
    if parts.path == NATIVE_STREAM_PATH:
        return None
    if parts.path not in ADAPTERS:
        raise RouteError(http.HTTPStatus.NOT_FOUND, f"unknown path; the websocket endpoints are {', '.join(PATHS)}")
    return ADAPTERS[parts.path](parse_qs(parts.query))
