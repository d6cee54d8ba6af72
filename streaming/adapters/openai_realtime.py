"""OpenAI Realtime API transcription sessions over the native session (sans-I/O): `OpenAIRealtimeAdapter`.

It is: the translator for `ws://HOST:PORT/v1/realtime?intent=transcription`, so the official
`openai` SDK's realtime client (`client.realtime.connect(extra_query={"intent": "transcription"})`
with `websocket_base_url` pointing here) works unchanged. Names and shapes follow the API
reference and the SDK's types (`openai.types.realtime`):
- the server opens with `session.created`; `session.update` with a transcription session
  (`{"type": "transcription", "audio": {"input": {"format", "transcription", "turn_detection"}}}`)
  is answered with `session.updated`, and the beta `transcription_session.update`
  (`input_audio_format`: `pcm16` | `g711_ulaw` | `g711_alaw`, `input_audio_transcription`,
  `turn_detection`) with `transcription_session.updated`. Formats: 16-bit PCM at 24 kHz
  (`audio/pcm`), G.711 μ-law / A-law at 8 kHz (`audio/pcmu`, `audio/pcma`). The native session
  starts at the first update (or the first audio); its format is fixed from then on.
- `input_audio_buffer.append` carries base64 audio; nothing answers it.
- Server VAD (`turn_detection` `server_vad`, the default; `semantic_vad` is served the same): each
  caption the engine makes is one user item. Its first words send
  `input_audio_buffer.speech_started` (`audio_start_ms`, `item_id`), its committed words stream as
  `conversation.item.input_audio_transcription.delta`, and when it closes come
  `input_audio_buffer.speech_stopped` (`audio_end_ms`), `input_audio_buffer.committed`
  (`item_id`, `previous_item_id`: items chain in order), the last delta and
  `conversation.item.input_audio_transcription.completed` (`transcript`, `content_index` 0,
  `usage` in seconds of audio). The deltas of an item concatenate to its transcript.
- No turn detection (`turn_detection: null`): `input_audio_buffer.commit` makes an item of the
  audio appended since the last commit. It is answered with `input_audio_buffer.committed` at once;
  the session then feeds `COMMIT_PAD_S` of silence (so the engine hears the utterance end and
  commits its words) and sends the item's delta and `completed` once the engine has passed the
  commit point (`Progress`). `input_audio_buffer.clear` → `input_audio_buffer.cleared`; words of
  the cleared audio are dropped. Committing less than 100 ms of audio is refused with
  `input_audio_buffer_commit_empty`, as the API does.
- Errors have the API's shape, `{"type": "error", "event_id", "error": {"type", "code", "message",
  "param", "event_id"}}`, and — unknown event, bad base64, a wrong format, an empty commit — leave
  the session open. A fatal native error is sent the same way, then the socket closes.

It is not: the conversation API (no responses, no output audio, no `conversation.item.create`).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Sequence

from patchstream.streaming.adapters.adapter import ALAW_SILENCE, MULAW_SILENCE, AdapterAudio, AdapterInput, decode_base64
from patchstream.streaming.protocol import (
    AudioFormat,
    CaptionFinal,
    CaptionPartial,
    ControlUpdate,
    Ended,
    Error,
    ErrorCode,
    Event,
    StartMessage,
    WordTiming,
)
from patchstream.streaming.session_protocol import Progress, Reply

REALTIME_PATH = "/v1/realtime"
TRANSCRIPTION_INTENT = "transcription"
MIN_COMMIT_S = 0.1  # the API refuses to commit less than 100 ms of audio
COMMIT_PAD_S = 1.5  # silence fed after a manual commit: longer than the engines' end-of-phrase pause


@dataclass(frozen=True)
class _Format:
    """One input audio format: its names in the GA and beta APIs, and the native encoding."""

    ga: dict  # `audio.input.format` object
    beta: str  # `input_audio_format` string
    native: AudioFormat  # what the native session decodes
    silence: bytes  # one sample of silence

    @property
    def bytes_per_second(self) -> int:
        return self.native.sample_rate * len(self.silence)


FORMATS = (
    _Format({"type": "audio/pcm", "rate": 24_000}, "pcm16", AudioFormat("pcm_s16le", 24_000, 1), b"\x00\x00"),
    _Format({"type": "audio/pcmu"}, "g711_ulaw", AudioFormat("mulaw", 8_000, 1), bytes([MULAW_SILENCE])),
    _Format({"type": "audio/pcma"}, "g711_alaw", AudioFormat("alaw", 8_000, 1), bytes([ALAW_SILENCE])),
)
CLIENT_EVENTS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)
# Native error codes the client caused (the API's invalid_request_error); the rest are server errors.
_CLIENT_CODES = frozenset({
    ErrorCode.BAD_JSON, ErrorCode.BAD_MESSAGE, ErrorCode.BAD_START, ErrorCode.BAD_FORMAT, ErrorCode.DECODE_FAILED,
    ErrorCode.FRAME_TOO_LARGE, ErrorCode.UNSUPPORTED_ENCODING, ErrorCode.IDLE_TIMEOUT, ErrorCode.START_TIMEOUT,
    ErrorCode.SESSION_LIMIT, ErrorCode.UNSUPPORTED_CONTROL,
})


class _RequestError(Exception):
    """A client event the API would refuse: becomes an `error` event; the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@dataclass
class _Item:
    """One user item in the making."""

    item_id: str
    sent: str = ""  # transcript text already sent as deltas


class OpenAIRealtimeAdapter:
    """One Realtime transcription websocket."""

    progress_events = True

    def __init__(self) -> None:
        self._session_id = f"sess_{secrets.token_hex(12)}"
        self._events = 0  # server events sent (their ids)
        self._format = FORMATS[0]
        self._vad: dict | None = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
        self._transcription: dict = {"model": "whisper-1", "language": "en", "prompt": ""}
        self._started = False  # the native session has been started (the format is fixed)
        self._fed_s = 0.0  # media seconds fed to the native session (appended audio and padding)
        self._uncommitted_s = 0.0  # appended audio since the last commit or clear
        self._last_commit_s = 0.0  # media time of the last commit or clear
        self._cleared: list[tuple[float, float]] = []  # media spans whose words are dropped
        self._previous_item: str | None = None  # the last item committed (previous_item_id)
        self._items: dict[str, _Item] = {}  # server VAD: caption id → its item
        self._words: list[WordTiming] = []  # manual commits: committed words not yet in an item, in order
        self._taken: dict[str, int] = {}  # manual commits: caption id → its committed words already in `_words`
        self._pending: list[tuple[str, float]] = []  # manual commits: (item id, media time committed) awaiting words

    # -- from the client ---------------------------------------------------------------------------

    def connected(self) -> Sequence[AdapterInput]:
        return [self._reply("session.created", session=self._session())]

    def receive_bytes(self, data: bytes) -> Sequence[AdapterInput]:
        return [self._error("invalid_request_error", "invalid_value", "binary messages are not accepted; send JSON events")]

    def receive_text(self, text: str) -> Sequence[AdapterInput]:
        event_id = None
        try:
            try:
                message = json.loads(text)
            except json.JSONDecodeError as error:
                raise _RequestError("invalid_json", f"The server could not parse the JSON: {error.msg}") from None
            if not isinstance(message, dict):
                raise _RequestError("invalid_json", "A client event must be a JSON object")
            event_id = message.get("event_id") if isinstance(message.get("event_id"), str) else None
            return self._event(message)
        except _RequestError as error:
            return [self._error("invalid_request_error", error.code, error.message, error.param, event_id)]

    def _event(self, message: dict) -> Sequence[AdapterInput]:
        kind = message.get("type")
        if kind == "session.update":
            return self._update(message.get("session"), beta=False)
        if kind == "transcription_session.update":
            return self._update(message.get("session"), beta=True)
        if kind == "input_audio_buffer.append":
            return self._append(message.get("audio"))
        if kind == "input_audio_buffer.commit":
            return self._commit()
        if kind == "input_audio_buffer.clear":
            self._cleared.append((self._last_commit_s, self._fed_s))
            self._last_commit_s, self._uncommitted_s = self._fed_s, 0.0
            return [self._reply("input_audio_buffer.cleared")]
        supported = ", ".join(f"'{name}'" for name in CLIENT_EVENTS)
        raise _RequestError("invalid_value", f"Invalid value: '{kind}'. Supported values are: {supported}.", "type")

    def _update(self, session: object, beta: bool) -> Sequence[AdapterInput]:
        if not isinstance(session, dict):
            raise _RequestError("missing_required_parameter", "Missing required parameter: 'session'.", "session")
        if beta:
            audio_in = session
            fmt = self._beta_format(session.get("input_audio_format"))
            transcription_key = "input_audio_transcription"
        else:
            if session.get("type", "transcription") != "transcription":
                raise _RequestError(
                    "invalid_value",
                    "Only transcription sessions are served here: set `session.type` to 'transcription'.",
                    "session.type",
                )
            audio = session.get("audio") if isinstance(session.get("audio"), dict) else {}
            audio_in = audio.get("input") if isinstance(audio.get("input"), dict) else {}
            fmt = self._ga_format(audio_in.get("format"))
            transcription_key = "transcription"
        if fmt is not None and fmt is not self._format:
            if self._started:
                raise _RequestError(
                    "invalid_value", "The input audio format cannot change once the session has started (at the first update or audio).", "format"
                )
            self._format = fmt
        if "turn_detection" in audio_in:
            detection = audio_in["turn_detection"]
            if detection is not None and (not isinstance(detection, dict) or detection.get("type") not in ("server_vad", "semantic_vad")):
                raise _RequestError(
                    "invalid_value", "Invalid turn_detection: use type 'server_vad', 'semantic_vad' or null.", "turn_detection"
                )
            self._vad = detection
        inputs: list[AdapterInput] = []
        transcription = audio_in.get(transcription_key)
        if isinstance(transcription, dict):
            prompt_before = self._transcription.get("prompt") or ""
            self._transcription.update({k: v for k, v in transcription.items() if isinstance(v, str) or v is None})
            prompt = self._transcription.get("prompt") or ""
            if self._started and prompt != prompt_before:
                inputs.append(ControlUpdate(prompt=prompt))
        name = "transcription_session.updated" if beta else "session.updated"
        # The native session starts now (its format fixed), so a client may wait for speech as long
        # as it likes before appending; without an update it starts at the first audio.
        return [*inputs, self._reply(name, session=self._session(beta)), *self._start()]

    def _ga_format(self, value: object) -> _Format | None:
        if value is None:
            return None
        kind = value.get("type") if isinstance(value, dict) else None
        for fmt in FORMATS:
            if fmt.ga["type"] == kind and (isinstance(value, dict) and value.get("rate", fmt.native.sample_rate) == fmt.native.sample_rate):
                return fmt
        raise _RequestError(
            "invalid_value",
            f"Invalid value: {json.dumps(value)}. Supported formats are: 'audio/pcm' at 24000 Hz, 'audio/pcmu', 'audio/pcma'.",
            "session.audio.input.format",
        )

    def _beta_format(self, value: object) -> _Format | None:
        if value is None:
            return None
        for fmt in FORMATS:
            if fmt.beta == value:
                return fmt
        raise _RequestError(
            "invalid_value",
            f"Invalid value: '{value}'. Supported values are: 'pcm16', 'g711_ulaw', and 'g711_alaw'.",
            "session.input_audio_format",
        )

    def _start(self) -> list[AdapterInput]:
        if self._started:
            return []
        self._started = True
        language = (self._transcription.get("language") or "en").split("-")[0].lower()
        return [
            StartMessage(
                audio=self._format.native,
                language=language,
                prompt=(self._transcription.get("prompt") or "")[:2000],
                stats=False,
            )
        ]

    def _append(self, audio: object) -> Sequence[AdapterInput]:
        data = decode_base64(audio)
        if data is None:
            raise _RequestError("invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio")
        if not data:
            return ()
        seconds = len(data) / self._format.bytes_per_second
        self._fed_s += seconds
        self._uncommitted_s += seconds
        return [*self._start(), AdapterAudio(data)]

    def _commit(self) -> Sequence[AdapterInput]:
        if self._uncommitted_s < MIN_COMMIT_S:
            raise _RequestError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {self._uncommitted_s * 1000:.2f}ms of audio.",
            )
        self._uncommitted_s = 0.0
        if self._vad is not None:
            return ()  # server VAD decides where items end; a manual commit adds nothing to it
        item_id = self._new_item_id()
        committed = self._reply("input_audio_buffer.committed", item_id=item_id, previous_item_id=self._previous_item)
        self._previous_item = item_id
        self._pending.append((item_id, self._fed_s))
        self._last_commit_s = self._fed_s
        padding = self._format.silence * round(COMMIT_PAD_S * self._format.native.sample_rate)
        self._fed_s += COMMIT_PAD_S
        return [committed, AdapterAudio(padding)]

    # -- to the client -----------------------------------------------------------------------------

    def send(self, event: Event | Progress) -> Sequence[str]:
        if isinstance(event, (CaptionPartial, CaptionFinal)):
            if self._in_cleared(event.start):
                return ()
            if self._vad is None:
                self._collect(event)
                return ()
            return self._vad_caption(event)
        if isinstance(event, Progress):
            return self._complete_pending(event.committed_until)
        if isinstance(event, Error):
            kind = "invalid_request_error" if event.code in _CLIENT_CODES else "server_error"
            return [self._error(kind, event.code, event.message).text]
        if isinstance(event, Ended):
            return self._complete_pending(float("inf"))
        return ()  # ready, stats, interpretations: no Realtime form

    def _vad_caption(self, caption: CaptionPartial | CaptionFinal) -> list[str]:
        out: list[str] = []
        item = self._items.get(caption.caption_id)
        if item is None:
            item = self._items[caption.caption_id] = _Item(self._new_item_id())
            out.append(self._text("input_audio_buffer.speech_started", audio_start_ms=_ms(caption.start), item_id=item.item_id))
        if isinstance(caption, CaptionPartial):
            out += self._delta(item, caption.stable_text)
            return out
        del self._items[caption.caption_id]
        out.append(self._text("input_audio_buffer.speech_stopped", audio_end_ms=_ms(caption.end), item_id=item.item_id))
        out.append(self._text("input_audio_buffer.committed", item_id=item.item_id, previous_item_id=self._previous_item))
        self._previous_item = item.item_id
        out += self._delta(item, caption.text)
        out.append(self._completed(item.item_id, caption.text, caption.end - caption.start))
        return out

    def _delta(self, item: _Item, text: str) -> list[str]:
        """The part of `text` not sent yet, when it extends what was (deltas only ever append)."""
        if not text.startswith(item.sent) or len(text) == len(item.sent):
            return []
        delta, item.sent = text[len(item.sent) :], text
        return [self._text("conversation.item.input_audio_transcription.delta", item_id=item.item_id, content_index=0, delta=delta)]

    def _collect(self, caption: CaptionPartial | CaptionFinal) -> None:
        """Manual commits: keep every committed word once (a caption's stable words only grow, and
        its final holds them all), whether or not its caption has closed."""
        stable = [word for word in caption.words if word.stable]
        taken = self._taken.get(caption.caption_id, 0)
        self._words += stable[taken:]
        if isinstance(caption, CaptionFinal):
            self._taken.pop(caption.caption_id, None)
        else:
            self._taken[caption.caption_id] = max(taken, len(stable))

    def _complete_pending(self, committed_until: float) -> list[str]:
        """Items whose audio the engine has committed every word of: their delta and `completed`."""
        out: list[str] = []
        while self._pending and self._pending[0][1] <= committed_until:
            item_id, until = self._pending.pop(0)
            words = [word for word in self._words if word.start < until]
            self._words = [word for word in self._words if word.start >= until]
            transcript = " ".join(word.text for word in words)
            seconds = max((word.end for word in words), default=0.0) - min((word.start for word in words), default=0.0)
            out += self._delta(_Item(item_id), transcript)
            out.append(self._completed(item_id, transcript, seconds))
        return out

    def _completed(self, item_id: str, transcript: str, seconds: float) -> str:
        return self._text(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": round(max(seconds, 0.0), 3)},
        )

    def _in_cleared(self, start: float) -> bool:
        return any(low <= start < high for low, high in self._cleared)

    # -- message building --------------------------------------------------------------------------

    def _session(self, beta: bool = False) -> dict:
        transcription = {key: value for key, value in self._transcription.items() if value}
        if beta:
            return {
                "id": self._session_id,
                "object": "realtime.transcription_session",
                "input_audio_format": self._format.beta,
                "input_audio_transcription": transcription,
                "turn_detection": self._vad,
            }
        return {
            "type": "transcription",
            "id": self._session_id,
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": self._format.ga,
                    "transcription": transcription,
                    "turn_detection": self._vad,
                    "noise_reduction": None,
                }
            },
        }

    def _text(self, kind: str, **fields) -> str:
        self._events += 1
        return json.dumps({"type": kind, "event_id": f"event_{self._events:06d}", **fields}, ensure_ascii=False)

    def _reply(self, kind: str, **fields) -> Reply:
        return Reply(self._text(kind, **fields))

    def _error(self, kind: str, code: str, message: str, param: str | None = None, event_id: str | None = None) -> Reply:
        error = {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id}
        return self._reply("error", error=error)

    def _new_item_id(self) -> str:
        return f"item_{secrets.token_hex(10)}"


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))
