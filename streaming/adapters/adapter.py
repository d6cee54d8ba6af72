"""The contract between a foreign streaming protocol and the native session: `ProtocolAdapter`.

It is: what a protocol adapter (`twilio.py`, `audiohook.py`, `openai_realtime.py`) promises the
session shell (`session.py`). An adapter is sans-I/O: it takes the client's messages as they arrive
and returns native inputs — control messages (`StartMessage`, `StopMessage`), audio bytes in the
encoding its `start` declared (`AdapterAudio`), and messages of its own protocol to send back as
they are (`Reply`: a pong, an acknowledgement, an error in the protocol's own shape). Going out, it
turns each native event the session queues (captions, errors, `ended`, and `Progress` markers when
it asks for them) into zero or more messages of its protocol. The native session does everything
else — decoding, chunking, channels, the engine, timeouts — so the engine never learns which
protocol a session speaks.

It is not: a parser of the native protocol, and never awaits or touches a socket.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Protocol, Sequence

from patchstream.streaming.protocol import ControlMessage, Event
from patchstream.streaming.session_protocol import Progress, Reply

# G.711 silence, for filling a gap in one track of a telephony stream (μ-law 0xFF and A-law 0xD5 decode to 0).
MULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5


@dataclass(frozen=True)
class AdapterAudio:
    """Audio bytes for the native session, in the encoding of the `start` the adapter sent."""

    data: bytes  # interleaved samples, in order


AdapterInput = ControlMessage | AdapterAudio | Reply


class ProtocolAdapter(Protocol):
    """One session's translator between a foreign protocol and the native session."""

    progress_events: bool  # the session should queue `Progress` markers for `send`

    def connected(self) -> Sequence[AdapterInput]:
        """The websocket opened: what to do before the client says anything (usually nothing)."""
        ...

    def receive_text(self, text: str) -> Sequence[AdapterInput]:
        """One text message from the client."""
        ...

    def receive_bytes(self, data: bytes) -> Sequence[AdapterInput]:
        """One binary message from the client."""
        ...

    def send(self, event: Event | Progress) -> Sequence[str]:
        """A native event (or progress marker) → the messages to send in this protocol."""
        ...


def decode_base64(text: object) -> bytes | None:
    """Strict base64 (foreign protocols carry audio so); None when `text` is not base64."""
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
