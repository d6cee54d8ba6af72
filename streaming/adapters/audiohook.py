"""Genesys Cloud AudioHook (protocol version 2) over the native session (sans-I/O): `AudioHookAdapter`.

It is: the translator for `ws://HOST:PORT/v1/audiohook`. Genesys (the client) sends JSON text
messages `{version, id, type, seq, serverseq, position, parameters}` and binary audio; the server
answers `{version, id, type, seq, clientseq, parameters}`. Every client message must carry the
next `seq` (1, 2, ...) and the session's `id`; the server numbers its own messages and echoes the
last client `seq` it read as `clientseq`.
- `open` offers media; the first offer of PCMU at 8 kHz is taken and becomes a native multichannel
  `start`: channel `external` is labelled `customer`, `internal` is `agent`. `opened` (with the
  chosen media) answers once the engine session is open. Binary messages are then interleaved μ-law
  of those channels, decoded where all G.711 is decoded (`decode.py`).
- `ping` → `pong`; `paused` / `resumed` (Genesys pausing the audio, e.g. for a secure pause) move
  the session between active and paused (no audio is accepted while paused); `update`,
  `discarded` and client `error` are accepted and change nothing.
- `close` → the native `stop`: the last transcripts are sent, then `closed`.
- Captions become `event` messages with one `transcript` entity each (`isFinal` false for
  partials, true for finals; one entity `id` per caption; its `channel` external/internal; offsets
  and durations as ISO 8601 `PT…S` on the audio stream's clock, tokens per word).
- A broken message (not JSON, wrong `seq` or `id`, an unknown type, audio outside the active state)
  is answered as AudioHook servers answer it: `disconnect` with reason `error`, after which Genesys
  closes; a fatal native error likewise. Non-fatal native errors have no AudioHook form and are not sent.

It is not: authentication (signed requests are the business of whatever fronts the server).
"""

from __future__ import annotations

import json
import uuid
from typing import Sequence

from patchstream.streaming.adapters.adapter import AdapterAudio, AdapterInput
from patchstream.streaming.protocol import (
    AudioFormat,
    CaptionFinal,
    CaptionPartial,
    Ended,
    Error,
    Event,
    ProtocolError,
    Ready,
    StartMessage,
    StopMessage,
)
from patchstream.streaming.session_protocol import Progress, Reply

AUDIOHOOK_PATH = "/v1/audiohook"
AUDIOHOOK_VERSION = "2"
AUDIOHOOK_RATE_HZ = 8_000
CHANNEL_LABELS = {"external": "customer", "internal": "agent"}  # AudioHook channel → caption channel label
NULL_UUID = "00000000-0000-0000-0000-000000000000"


def duration(seconds: float) -> str:
    """An ISO 8601 duration in seconds, as AudioHook writes positions: `PT12.34S`."""
    return f"PT{round(max(seconds, 0.0), 3):g}S"


class AudioHookAdapter:
    """One AudioHook websocket."""

    progress_events = False

    def __init__(self) -> None:
        self.id: str | None = None  # the session id Genesys chose (from the first message)
        self._seq = 0  # the last server message's seq
        self._clientseq = 0  # the last client message's seq
        self._state = "preparing"  # preparing → opening → active ⇄ paused → closing → closed / disconnected
        self._media: dict | None = None  # the media offer taken
        self._channels: tuple[str, ...] = ()  # AudioHook channel names, in interleaving order

    def connected(self) -> Sequence[AdapterInput]:
        return ()

    # -- from Genesys ------------------------------------------------------------------------------

    def receive_bytes(self, data: bytes) -> Sequence[AdapterInput]:
        if self._state != "active":
            return self._disconnect(f"Received audio in state {self._state}")
        return [AdapterAudio(data)]

    def receive_text(self, text: str) -> Sequence[AdapterInput]:
        if self._state == "disconnected":
            return ()
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return self._disconnect("Text message not valid JSON")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str) or not isinstance(
            message.get("seq"), int
        ):
            return self._disconnect("Message not a well-formed client message")
        if message["seq"] != self._clientseq + 1:
            return self._disconnect("Invalid seq value (not monotonically increasing)")
        self._clientseq = message["seq"]
        if self.id is None or self.id == NULL_UUID:
            self.id = str(message.get("id"))
        elif message.get("id") != self.id:
            return self._disconnect("Session identifier mismatch")
        parameters = message.get("parameters") if isinstance(message.get("parameters"), dict) else {}
        kind = message["type"]
        if kind == "open":
            return self._open(parameters)
        if kind == "ping":
            return [self._reply("pong", {})]
        if kind == "paused":
            self._state = "paused" if self._state == "active" else self._state
            return ()
        if kind == "resumed":
            self._state = "active" if self._state == "paused" else self._state
            return ()
        if kind in ("update", "discarded", "error"):
            return ()
        if kind == "close":
            if self._state in ("closing", "closed"):
                return ()
            started = self._state != "preparing"
            self._state = "closing"
            return [StopMessage()] if started else [self._reply("closed", {})]
        return self._disconnect(f"Invalid Message: '{kind}' is not a supported client message")

    def _open(self, parameters: dict) -> Sequence[AdapterInput]:
        if self._state != "preparing":
            return ()  # AudioHook ignores an `open` after the first
        offers = parameters.get("media") if isinstance(parameters.get("media"), list) else []
        for offer in offers:
            channels = offer.get("channels") if isinstance(offer, dict) else None
            if (
                offer.get("type", "audio") == "audio"
                and offer.get("format") == "PCMU"
                and offer.get("rate") == AUDIOHOOK_RATE_HZ
                and isinstance(channels, list)
                and channels
                and all(channel in CHANNEL_LABELS for channel in channels)
                and len(set(channels)) == len(channels)
            ):
                self._media, self._channels = offer, tuple(channels)
                break
        else:
            return self._disconnect("Invalid Message: no offered media is PCMU at 8000 Hz (external/internal channels)")
        language = parameters.get("language") if isinstance(parameters.get("language"), str) else "en-US"
        custom = parameters.get("customConfig") if isinstance(parameters.get("customConfig"), dict) else {}
        try:
            start = StartMessage(
                audio=AudioFormat("mulaw", AUDIOHOOK_RATE_HZ, len(self._channels)),
                language=language.split("-")[0].lower() or "en",  # "en-US" → the engine's "en"
                channels=tuple(CHANNEL_LABELS[channel] for channel in self._channels),
                assist=custom.get("assist") if isinstance(custom.get("assist"), (dict, bool)) else None,
            )
        except ProtocolError as error:
            return self._disconnect(error.message)
        self._state = "opening"
        return [start]

    # -- to Genesys --------------------------------------------------------------------------------

    def send(self, event: Event | Progress) -> Sequence[str]:
        if self._state == "disconnected":
            return ()
        if isinstance(event, Ready):
            if self._state != "opening":
                return ()
            self._state = "active"
            return [self._message("opened", {"media": [self._media], "startPaused": False})]
        if isinstance(event, (CaptionPartial, CaptionFinal)):
            return [self._message("event", {"entities": [self._transcript(event)]})]
        if isinstance(event, Error) and event.fatal:
            replies = self._disconnect(f"{event.code}: {event.message}")
            return [reply.text for reply in replies if isinstance(reply, Reply)]  # the session is ending anyway
        if isinstance(event, Ended) and self._state == "closing":
            self._state = "closed"
            return [self._message("closed", {})]
        return ()

    def _transcript(self, caption: CaptionPartial | CaptionFinal) -> dict:
        channel = next((name for name, label in CHANNEL_LABELS.items() if label == caption.channel), "external")
        tokens = [
            {
                "type": "word",
                "value": word.text,
                "confidence": word.confidence,
                "offset": duration(word.start),
                "duration": duration(word.end - word.start),
            }
            for word in caption.words
        ]
        confidence = min((word.confidence for word in caption.words), default=1.0)
        return {
            "type": "transcript",
            "data": {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.id}/{caption.caption_id}")),  # one per caption
                "channel": channel,
                "isFinal": isinstance(caption, CaptionFinal),
                "offset": duration(caption.start),
                "duration": duration(caption.end - caption.start),
                "alternatives": [
                    {
                        "confidence": round(confidence, 3),
                        "interpretations": [{"type": "display", "transcript": caption.text, "tokens": tokens}],
                    }
                ],
            },
        }

    def _message(self, kind: str, parameters: dict) -> str:
        self._seq += 1
        message = {
            "version": AUDIOHOOK_VERSION,
            "type": kind,
            "seq": self._seq,
            "clientseq": self._clientseq,
            "id": self.id or NULL_UUID,
            "parameters": parameters,
        }
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False)

    def _reply(self, kind: str, parameters: dict) -> Reply:
        return Reply(self._message(kind, parameters))

    def _disconnect(self, info: str) -> list[AdapterInput]:
        """A protocol error: `disconnect` (reason error); Genesys then closes the connection."""
        if self._state == "disconnected":
            return []
        started = self._state in ("opening", "active", "paused")
        self._state = "disconnected"
        disconnect = Reply(self._message("disconnect", {"reason": "error", "info": info}))
        return [disconnect, StopMessage()] if started else [disconnect]
