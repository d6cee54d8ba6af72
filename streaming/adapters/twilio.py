"""Twilio Media Streams over the native session (sans-I/O): `TwilioAdapter`.

It is: the translator for `ws://HOST:PORT/v1/twilio`, the URL a TwiML `<Stream>` names. Twilio
sends JSON text messages: `connected`, then `start` (streamSid, callSid, tracks, customParameters,
mediaFormat: μ-law 8 kHz mono per track), `media` (one track's base64 μ-law with its `timestamp`
in ms since the stream began), `mark`, `dtmf`, and `stop`. Each track becomes one labelled channel
of a native multichannel session (`inbound`, `outbound`): the tracks are placed on their own
timelines and interleaved (`tracks.py`), and the μ-law is decoded where all G.711 is decoded,
`decode.py`. `stop` finishes the session like the native `stop`.

Going out: Twilio itself reads nothing a unidirectional stream's server sends (and a bidirectional
`<Connect><Stream>` reads only its `media`/`mark`/`clear`), so captions go to whoever else listens
on the socket as native events (docs/protocol.md), each with the call's `streamSid`; the caption's
`channel` is its track. `mark` and `dtmf` are answered with a `mark` / `dtmf` event giving the
media time they arrived at. Bad input gets a native `error` event; the call goes on.

It is not: a Twilio client, and it never sends audio back.
"""

from __future__ import annotations

import json
from typing import Sequence

from patchstream.streaming.adapters.adapter import MULAW_SILENCE, AdapterAudio, AdapterInput, decode_base64
from patchstream.streaming.adapters.tracks import TrackInterleaver
from patchstream.streaming.protocol import (
    AudioFormat,
    Error,
    ErrorCode,
    Event,
    ProtocolError,
    StartMessage,
    StopMessage,
    event_fields,
    to_json,
)
from patchstream.streaming.session_protocol import Progress, Reply

TWILIO_PATH = "/v1/twilio"
TWILIO_RATE_HZ = 8_000  # Media Streams carry 8 kHz μ-law
TWILIO_ENCODING = "audio/x-mulaw"
TRACKS = ("inbound", "outbound")  # the track names Twilio uses in `start.tracks` and `media.track`
MAX_SKEW_SAMPLES = TWILIO_RATE_HZ  # 1 s: a track this far behind the other is filled with silence
MAX_GAP_SAMPLES = 5 * TWILIO_RATE_HZ  # a longer jump in one track's timestamps is a clock bug


class TwilioAdapter:
    """One Media Streams websocket."""

    progress_events = False

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self._tracks: tuple[str, ...] = ()
        self._interleaver: TrackInterleaver | None = None
        self._stopped = False

    def connected(self) -> Sequence[AdapterInput]:
        return ()

    def receive_bytes(self, data: bytes) -> Sequence[AdapterInput]:
        return [self._error(ErrorCode.BAD_MESSAGE, "Twilio Media Streams send JSON text messages only")]

    def receive_text(self, text: str) -> Sequence[AdapterInput]:
        try:
            message = json.loads(text)
        except json.JSONDecodeError as error:
            return [self._error(ErrorCode.BAD_JSON, f"text frame is not valid JSON: {error.msg}")]
        if not isinstance(message, dict):
            return [self._error(ErrorCode.BAD_MESSAGE, "a Twilio message is a JSON object")]
        kind = message.get("event")
        if kind == "connected":
            return ()
        if kind == "start":
            return self._start(message.get("start"), message.get("streamSid"))
        if self._interleaver is None or self._stopped:
            return [self._error(ErrorCode.NOT_STARTED, f"`{kind}` outside a started stream; `start` comes first")]
        if kind == "media":
            return self._media(message.get("media"))
        if kind in ("mark", "dtmf"):
            return [self._marker(kind, message.get(kind))]
        if kind == "stop":
            self._stopped = True
            tail = self._interleaver.flush()
            return [*([AdapterAudio(tail)] if tail else []), StopMessage()]
        return [self._error(ErrorCode.UNKNOWN_MESSAGE, f"unknown Twilio event {kind!r}")]

    def _start(self, start: object, stream_sid: object) -> Sequence[AdapterInput]:
        if self._interleaver is not None:
            return [self._error(ErrorCode.ALREADY_STARTED, "this stream has already started")]
        if not isinstance(start, dict):
            return [self._error(ErrorCode.BAD_START, "`start` must be an object")]
        media_format = start.get("mediaFormat") or {}
        tracks = start.get("tracks") or ["inbound"]
        if (
            not isinstance(tracks, list)
            or not tracks
            or any(track not in TRACKS for track in tracks)
            or len(set(tracks)) != len(tracks)
        ):
            return [self._error(ErrorCode.BAD_START, f"`start.tracks` must list some of {', '.join(TRACKS)}")]
        if media_format.get("encoding", TWILIO_ENCODING) != TWILIO_ENCODING or media_format.get(
            "sampleRate", TWILIO_RATE_HZ
        ) != TWILIO_RATE_HZ:
            return [self._error(ErrorCode.BAD_FORMAT, f"media must be {TWILIO_ENCODING} at {TWILIO_RATE_HZ} Hz")]
        self.stream_sid = stream_sid if isinstance(stream_sid, str) else start.get("streamSid")
        self.call_sid = start.get("callSid")
        self._tracks = tuple(tracks)
        self._interleaver = TrackInterleaver(len(tracks), MULAW_SILENCE, MAX_SKEW_SAMPLES, MAX_GAP_SAMPLES)
        parameters = start.get("customParameters")
        assist = parameters.get("assist") if isinstance(parameters, dict) else None
        try:
            assist = json.loads(assist) if isinstance(assist, str) else None  # customParameters values are strings
        except json.JSONDecodeError:
            assist = None
        try:
            native = StartMessage(
                audio=AudioFormat("mulaw", TWILIO_RATE_HZ, len(tracks)),
                channels=self._tracks,
                assist=assist if isinstance(assist, (dict, bool)) else None,
            )
        except ProtocolError as error:
            return [self._error(error.code, error.message)]
        return [native]

    def _media(self, media: object) -> Sequence[AdapterInput]:
        if not isinstance(media, dict) or media.get("track", "inbound") not in self._tracks:
            return [self._error(ErrorCode.BAD_MESSAGE, f"`media.track` must be one of {', '.join(self._tracks)}")]
        payload = decode_base64(media.get("payload"))
        if payload is None:
            return [self._error(ErrorCode.BAD_MESSAGE, "`media.payload` is not base64; the chunk was dropped")]
        start = None
        try:
            start = int(media["timestamp"]) * TWILIO_RATE_HZ // 1000 if "timestamp" in media else None
        except (TypeError, ValueError):
            return [self._error(ErrorCode.BAD_MESSAGE, "`media.timestamp` must be milliseconds")]
        audio = self._interleaver.push(self._tracks.index(media.get("track", "inbound")), payload, start)
        return [AdapterAudio(audio)] if audio else ()

    def _marker(self, kind: str, body: object) -> Reply:
        fields = body if isinstance(body, dict) else {}
        time_s = round(self._interleaver.emitted / TWILIO_RATE_HZ, 3)
        return Reply(json.dumps({"type": kind, **fields, "time": time_s, "streamSid": self.stream_sid}))

    def _error(self, code: str, message: str) -> Reply:
        return Reply(to_json(Error(code, message, fatal=False)))

    def send(self, event: Event | Progress) -> Sequence[str]:
        if isinstance(event, Progress):
            return ()
        return [json.dumps({**event_fields(event), "streamSid": self.stream_sid}, separators=(",", ":"), ensure_ascii=False)]
