"""Server → client events of the native protocol, as frozen dataclasses with their JSON form.

`docs/protocol.md` documents every event with examples; this module is the single place that
builds them. It does no I/O.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class WordTiming:
    """A word inside a caption, with its media times and whether it can still change."""

    text: str  # the word with its punctuation
    start: float  # media seconds since stream start
    end: float  # media seconds since stream start
    stable: bool  # True once committed: a stable word never changes again
    confidence: float = 1.0  # model probability in [0, 1]


@dataclass(frozen=True)
class Ready:
    """Answer to `start`: the session is open and audio may flow."""

    session_id: str  # server-chosen id, also used in logs
    engine: str  # name of the engine that will caption this session
    sample_rate: int  # rate the server resamples to (informational)
    protocol: int = PROTOCOL_VERSION
    type: str = "ready"


@dataclass(frozen=True)
class CaptionPartial:
    """The current state of an open caption; each partial replaces the previous one with its id."""

    caption_id: str  # stable for the life of the caption; the final carries the same id
    text: str  # the whole caption as it reads now (stable words then tentative ones)
    stable_text: str  # the committed prefix of `text`; it only grows
    start: float  # media seconds of the first word
    end: float  # media seconds of the last word
    words: tuple[WordTiming, ...]
    type: str = "caption.partial"


@dataclass(frozen=True)
class CaptionFinal:
    """A closed caption; its text never changes again. Finals are never dropped."""

    caption_id: str
    text: str
    start: float
    end: float
    words: tuple[WordTiming, ...]
    type: str = "caption.final"


@dataclass(frozen=True)
class Stats:
    """Periodic health of one session."""

    audio_received_s: float  # media seconds received and decoded
    audio_processed_s: float  # media seconds the engine has looked at
    lag_s: float  # received − processed: how far captions trail the audio
    backlog_s: float  # audio waiting for the model right now
    dropped_audio_s: float  # audio discarded because the model fell behind (never silently)
    partials_coalesced: int  # partials replaced before they were sent (client reading slowly)
    type: str = "stats"


@dataclass(frozen=True)
class Error:
    """Something went wrong. `fatal` errors end the session; others only reject one message."""

    code: str  # machine-readable, listed in docs/protocol.md
    message: str  # for humans
    fatal: bool = False
    type: str = "error"


@dataclass(frozen=True)
class Ended:
    """The session is over; the server closes the websocket after this event."""

    reason: str  # "stop", "error", "idle", "shutdown", "limit"
    audio_received_s: float = 0.0
    captions: int = 0  # number of finals sent
    type: str = "ended"


class CodedError(Exception):
    """A failure that becomes an `error` event: a code from docs/protocol.md and a message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


Event = Ready | CaptionPartial | CaptionFinal | Stats | Error | Ended


def _rounded(value):
    # Media times travel as seconds with millisecond precision: enough for captions, short JSON.
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


def to_json(event: Event) -> str:
    """The wire form of an event: one JSON object with a `type` field."""
    payload = _rounded(asdict(event))
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ParsedEvent:
    """A server event as a client sees it: its type and its fields."""

    type: str
    fields: dict = field(default_factory=dict)


def parse_event(text: str) -> ParsedEvent:
    """Client side: read one server event (unknown types are kept, for forward compatibility)."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("server event is not a JSON object with a string `type`")
    return ParsedEvent(type=data["type"], fields=data)
