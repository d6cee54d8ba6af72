"""The native streaming protocol (v1): every message, event, error code and ended reason.

It is: the one module both sides of the websocket share. The server builds its events and parses
control messages here; clients import this module and nothing else of the server. It holds the
frozen dataclasses of every client → server control message and server → client event, their
JSON forms, the `ErrorCode` and `EndedReason` enums, the coded-error base class, the audio format
a `start` declares (validated without PyAV) and the demuxer allow-list. docs/protocol.md
documents the same names; `tests/streaming/test_protocol_conformance.py` holds them equal.

It is not: I/O (no sockets, no awaits) and not the session state machine (`session_protocol.py`).
It imports the standard library and `model/api.py` (itself stdlib-only at run time, for the one
seconds↔samples conversion), so a client or a test loads it without av, numpy, websockets or any
other server module.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field

# The one media-time conversion (one rounding rule), re-exported so clients need only this module.
from patchstream.model.api import samples_to_seconds, seconds_to_samples  # noqa: F401

PROTOCOL_VERSION = 1
NATIVE_STREAM_PATH = "/v1/stream"  # websocket endpoint of the native protocol
HEALTH_PATH = "/healthz"  # plain HTTP GET: 200 once the engine is warm
# --- issue 13: readiness, metrics, transcripts, resume (docs/protocol.md "HTTP endpoints", "Resume") ---
READY_PATH = "/readyz"  # plain HTTP GET: 200 while the server admits new sessions
METRICS_PATH = "/metrics"  # Prometheus text format
TRANSCRIPT_PATH = "/v1/transcripts/"  # + session id: GET a session's finals from the journal
RESUME_QUERY = ("resume", "resume_token", "finals_received")  # query of a websocket that resumes a session
MAX_CONTROL_BYTES = 64 * 1024  # a control message larger than this is not a control message
MAX_PROMPT_CHARS = 2_000  # bias text; longer prompts only slow decoding down
MAX_INSTRUCTION_CHARS = 2_000  # interpretation instruction; same bound as a prompt
MAX_CHANNEL_LABEL_CHARS = 32  # a channel label ("agent", "customer") travels in every caption event


class ErrorCode(enum.StrEnum):
    """The `code` of an `error` event (docs/protocol.md has the table: when, and whether fatal)."""

    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_MESSAGE = "unknown_message"
    NOT_STARTED = "not_started"
    ALREADY_STARTED = "already_started"
    BAD_START = "bad_start"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    BAD_FORMAT = "bad_format"
    UNSUPPORTED_TASK = "unsupported_task"
    FRAME_TOO_LARGE = "frame_too_large"
    DECODE_FAILED = "decode_failed"
    AUDIO_DROPPED = "audio_dropped"
    START_TIMEOUT = "start_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    SESSION_LIMIT = "session_limit"
    SERVER_BUSY = "server_busy"
    SLOW_CONSUMER = "slow_consumer"
    ENGINE_ERROR = "engine_error"
    INPUT_TOO_LARGE = "input_too_large"
    INTERNAL_ERROR = "internal_error"
    SHUTTING_DOWN = "shutting_down"
    VIDEO_NOT_DECLARED = "video_not_declared"
    BAD_IMAGE = "bad_image"
    IMAGE_TOO_LARGE = "image_too_large"
    FRAME_RATE_EXCEEDED = "frame_rate_exceeded"
    UNSUPPORTED_CONTROL = "unsupported_control"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    QUOTA_EXCEEDED = "quota_exceeded"
    RESUME_FAILED = "resume_failed"
    BAD_OFFER = "bad_offer"
    UNSUPPORTED_CODEC = "unsupported_codec"
    PEER_LOST = "peer_lost"
    ASSIST_FAILED = "assist_failed"


# A `start` that cannot be served ends the session; other bad control messages are only rejected.
FATAL_START_ERRORS = frozenset(
    {ErrorCode.BAD_START, ErrorCode.UNSUPPORTED_ENCODING, ErrorCode.BAD_FORMAT, ErrorCode.UNSUPPORTED_TASK}
)
# An offer the server cannot answer ends a WebRTC session: without the peer connection no media flows.
FATAL_SIGNAL_ERRORS = frozenset({ErrorCode.BAD_OFFER, ErrorCode.UNSUPPORTED_CODEC})


class EndedReason(enum.StrEnum):
    """The `reason` of an `ended` event."""

    STOP = "stop"  # the client sent `stop` and every caption was delivered
    ERROR = "error"  # a fatal error (its `error` event came first)
    IDLE = "idle"  # nothing was received for the idle timeout
    LIMIT = "limit"  # the session streamed more media than it may
    SHUTDOWN = "shutdown"  # the server is stopping
    DISCONNECTED = "disconnected"  # the client dropped and did not resume within the grace period (journal only)

    @classmethod
    def for_error(cls, code: str) -> EndedReason:
        """The reason a session ends with after a fatal error of this code."""
        return {
            ErrorCode.IDLE_TIMEOUT: cls.IDLE,
            ErrorCode.SESSION_LIMIT: cls.LIMIT,
            ErrorCode.SHUTTING_DOWN: cls.SHUTDOWN,
        }.get(code, cls.ERROR)


class CodedError(Exception):
    """A failure that becomes an `error` event: a code (an `ErrorCode` for anything a client sees)
    and a message for humans."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s  # when trying again makes sense (server_busy); None = not by waiting


class ProtocolError(CodedError):
    """A client message broke the protocol."""


# --- the audio a `start` declares ----------------------------------------------------------------

CONTAINER_ENCODING = "container"  # anything PyAV demuxes; format from the hint or from probing
# The media arrives as tracks of the session's WebRTC peer connection (negotiated with
# `webrtc.offer` / `webrtc.answer` on this websocket), not as binary messages.
WEBRTC_ENCODING = "webrtc"
RAW_ENCODINGS = ("pcm_s16le", "pcm_f32le", "mulaw", "alaw")  # interleaved samples at a declared rate
ENCODINGS = (*RAW_ENCODINGS, CONTAINER_ENCODING, WEBRTC_ENCODING)
MIN_CHANNELS, MAX_CHANNELS = 1, 8
MIN_SAMPLE_RATE_HZ = 4_000  # below narrow-band telephony nothing speech-like survives
MAX_SAMPLE_RATE_HZ = 384_000  # the highest rate common audio interfaces produce
# FFmpeg demuxers a client may name, and the only ones probing may pick. Never the whole list:
# `concat`, `hls` and friends open other files and URLs named inside the stream. FFmpeg matches a
# demuxer by any of its names, so "mov" admits its whole family (mp4, m4a, 3gp, ...).
ALLOWED_DEMUXERS = (
    "matroska", "webm", "ogg", "wav", "mp3", "flac", "mov", "mp4", "m4a", "aac", "mpegts",
    "amr", "au", "caf", "aiff", "w64",
)


# --- the video a `start` may declare ---------------------------------------------------------------

IMAGE_ENCODINGS = ("jpeg", "png")  # one still image per binary message, after a `frame` message
# container: video interleaved with the audio; webrtc: the peer connection's video track
VIDEO_ENCODINGS = (*IMAGE_ENCODINGS, CONTAINER_ENCODING, WEBRTC_ENCODING)
MAX_VIDEO_FPS = 60.0  # the fastest a client may declare; engines sample far fewer
MIN_VIDEO_FPS = 0.01  # the slowest: one frame per 100 s (a slower rate means no video)
MAX_MEDIA_TIME_S = 864_000.0  # ten days: a larger media time is a client bug, not a stream


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(condition: bool, code: ErrorCode, message: str) -> None:
    if not condition:
        raise ProtocolError(code, message)


@dataclass(frozen=True)
class AudioFormat:
    """What a client says its audio bytes are. Constructing an invalid one raises `ProtocolError`."""

    encoding: str  # one of ENCODINGS
    sample_rate: int | None = None  # Hz; required for raw encodings, ignored for containers
    channels: int | None = None  # interleaved channels, 1..8; required for raw encodings
    container: str | None = None  # demuxer hint, one of ALLOWED_DEMUXERS; None = probe

    def __post_init__(self) -> None:
        _require(
            self.encoding in ENCODINGS,
            ErrorCode.UNSUPPORTED_ENCODING,
            f"unknown audio encoding {self.encoding!r}; use one of {', '.join(ENCODINGS)}",
        )
        if self.is_raw:
            _require(
                self.sample_rate is not None and self.channels is not None,
                ErrorCode.BAD_FORMAT,
                f"{self.encoding} needs sample_rate and channels",
            )
            _require(self.container is None, ErrorCode.BAD_FORMAT, f"{self.encoding} is raw audio; container must be empty")
        _require(
            not (self.is_webrtc and self.container is not None),
            ErrorCode.BAD_FORMAT,
            "webrtc audio is negotiated with `webrtc.offer`; container must be empty",
        )
        _require(
            self.sample_rate is None
            or (_is_int(self.sample_rate) and MIN_SAMPLE_RATE_HZ <= self.sample_rate <= MAX_SAMPLE_RATE_HZ),
            ErrorCode.BAD_FORMAT,
            f"sample_rate {self.sample_rate!r} must be an integer in {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz",
        )
        _require(
            self.channels is None or (_is_int(self.channels) and MIN_CHANNELS <= self.channels <= MAX_CHANNELS),
            ErrorCode.BAD_FORMAT,
            f"channels {self.channels!r} must be an integer in {MIN_CHANNELS}..{MAX_CHANNELS}",
        )
        _require(
            self.container is None or self.container in ALLOWED_DEMUXERS,
            ErrorCode.BAD_FORMAT,
            f"container {self.container!r} is not accepted; use one of {', '.join(ALLOWED_DEMUXERS)}",
        )

    @property
    def is_raw(self) -> bool:
        return self.encoding in RAW_ENCODINGS

    @property
    def is_webrtc(self) -> bool:
        """The audio arrives on a WebRTC track, never as binary messages."""
        return self.encoding == WEBRTC_ENCODING


@dataclass(frozen=True)
class VideoFormat:
    """What a client says its video is. Constructing an invalid one raises `ProtocolError`."""

    encoding: str  # one of VIDEO_ENCODINGS
    fps: float = 1.0  # frames per media second the client sends, at most; far faster is rejected

    def __post_init__(self) -> None:
        _require(
            self.encoding in VIDEO_ENCODINGS,
            ErrorCode.UNSUPPORTED_ENCODING,
            f"unknown video encoding {self.encoding!r}; use one of {', '.join(VIDEO_ENCODINGS)}",
        )
        _require(
            isinstance(self.fps, (int, float)) and not isinstance(self.fps, bool)
            and MIN_VIDEO_FPS <= self.fps <= MAX_VIDEO_FPS,
            ErrorCode.BAD_FORMAT,
            f"video fps {self.fps!r} must be a number in [{MIN_VIDEO_FPS:g}, {MAX_VIDEO_FPS:g}]",
        )

    @property
    def is_image(self) -> bool:
        """Frames arrive one image per binary message (not inside the audio's container)."""
        return self.encoding in IMAGE_ENCODINGS


# --- client → server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StartMessage:
    """`start`: what the client will send and what it wants back."""

    audio: AudioFormat  # how the binary frames are encoded
    language: str = "en"  # language code of the speech
    task: str = "transcribe"  # the only task so far
    prompt: str = ""  # words that bias recognition
    interim_results: bool = True  # send `caption.partial` events
    stats: bool = True  # send periodic `stats` events
    video: VideoFormat | None = None  # the video the client will send; None = audio only
    interpretations: tuple[str, ...] | None = None  # interpretation kinds wanted; None = all the engine offers
    instruction: str = ""  # what to interpret beside captions, for engines that take instructions
    channels: tuple[str, ...] | None = None  # one label per audio channel: caption each apart; None = caption the mix
    assist: dict | bool | None = None  # agent assist options as sent; streaming/assist/config.py validates them

    @property
    def multichannel(self) -> bool:
        """Each channel is captioned as its own stream (labels given)."""
        return self.channels is not None


@dataclass(frozen=True)
class StopMessage:
    """`stop`: no more audio; flush, send the last finals, then `ended`."""


@dataclass(frozen=True)
class FrameMessage:
    """`frame`: the next binary message is one image (JPEG/PNG) shown at this media time."""

    time: float  # media seconds since stream start, on the audio's clock


@dataclass(frozen=True)
class ControlUpdate:
    """`control`: change what the engine is told mid-session; absent fields stay as they are."""

    prompt: str | None = None  # new bias words
    instruction: str | None = None  # new interpretation instruction ("" = none)
    interpretations: tuple[str, ...] | None = None  # new set of interpretation kinds wanted


@dataclass(frozen=True)
class WebRTCOffer:
    """`webrtc.offer`: the client's SDP offer for the session's peer connection (WebRTC sessions)."""

    sdp: str  # the offer's session description; candidates inside it or trickled after


@dataclass(frozen=True)
class WebRTCCandidate:
    """`webrtc.candidate`: one trickled ICE candidate of the client ("" ends the candidates)."""

    candidate: str  # the `candidate:` attribute line, as a browser's RTCIceCandidate.candidate gives it
    sdp_mid: str | None = None  # the media section it belongs to (by mid) ...
    sdp_mline_index: int | None = None  # ... or by index; one of the two is needed


ControlMessage = StartMessage | StopMessage | FrameMessage | ControlUpdate | WebRTCOffer | WebRTCCandidate


def _parse_audio_format(audio: object) -> AudioFormat:
    _require(isinstance(audio, dict), ErrorCode.BAD_START, "`audio` must be an object describing the stream")
    encoding = audio.get("encoding")
    _require(
        encoding in ENCODINGS,
        ErrorCode.UNSUPPORTED_ENCODING,
        f"unknown audio encoding {encoding!r}; use one of {', '.join(ENCODINGS)}",
    )
    for key in ("sample_rate", "channels"):
        value = audio.get(key)
        _require(value is None or _is_int(value), ErrorCode.BAD_START, f"`audio.{key}` must be an integer")
    container = audio.get("container")
    _require(container is None or isinstance(container, str), ErrorCode.BAD_START, "`audio.container` must be a string")
    # The constructor validates rates, channel counts and container names.
    return AudioFormat(encoding, audio.get("sample_rate"), audio.get("channels"), container)


def _parse_video_format(video: object) -> VideoFormat | None:
    if video is None:
        return None
    _require(isinstance(video, dict), ErrorCode.BAD_START, "`video` must be an object describing the video")
    # The constructor validates the encoding and the rate.
    return VideoFormat(video.get("encoding"), video.get("fps", 1.0))


def _text(message: dict, key: str, code: ErrorCode, limit: int) -> str | None:
    value = message.get(key)
    _require(value is None or isinstance(value, str), code, f"`{key}` must be a string")
    _require(value is None or len(value) <= limit, code, f"`{key}` is longer than {limit} characters")
    return value


def _kinds(message: dict, code: ErrorCode) -> tuple[str, ...] | None:
    value = message.get("interpretations")
    _require(
        value is None or (isinstance(value, list) and all(isinstance(kind, str) for kind in value)),
        code,
        "`interpretations` must be a list of interpretation kinds, e.g. [\"text\", \"scene\"]",
    )
    return None if value is None else tuple(dict.fromkeys(value))


def _flag(message: dict, key: str, default: bool) -> bool:
    value = message.get(key, default)
    _require(isinstance(value, bool), ErrorCode.BAD_START, f"`{key}` must be true or false")
    return value


def _channel_labels(message: dict, audio: AudioFormat) -> tuple[str, ...] | None:
    labels = message.get("channels")
    if labels is None:
        return None
    _require(
        isinstance(labels, list) and labels and all(
            isinstance(label, str) and 0 < len(label) <= MAX_CHANNEL_LABEL_CHARS for label in labels
        ),
        ErrorCode.BAD_START,
        f"`channels` must be a list of labels (strings of 1..{MAX_CHANNEL_LABEL_CHARS} characters), one per audio channel",
    )
    _require(len(set(labels)) == len(labels), ErrorCode.BAD_START, "`channels` labels must differ from each other")
    _require(
        audio.channels is None or audio.channels == len(labels),
        ErrorCode.BAD_FORMAT,
        f"`channels` names {len(labels)} channels but `audio.channels` is {audio.channels}",
    )
    return tuple(labels)


def _parse_start(message: dict) -> StartMessage:
    audio = _parse_audio_format(message.get("audio"))
    language = message.get("language", "en")
    _require(
        isinstance(language, str) and 0 < len(language) <= 16,
        ErrorCode.BAD_START,
        "`language` must be a short code like \"en\"",
    )
    task = message.get("task", "transcribe")
    _require(task == "transcribe", ErrorCode.UNSUPPORTED_TASK, f"task {task!r} is not supported; use \"transcribe\"")
    prompt = _text(message, "prompt", ErrorCode.BAD_START, MAX_PROMPT_CHARS) or ""
    video = _parse_video_format(message.get("video"))
    _require(
        video is None or video.encoding != CONTAINER_ENCODING or audio.encoding == CONTAINER_ENCODING,
        ErrorCode.BAD_FORMAT,
        "container video travels inside the audio's container: declare `audio.encoding` \"container\" too",
    )
    _require(
        video is None or (video.encoding == WEBRTC_ENCODING) == (audio.encoding == WEBRTC_ENCODING),
        ErrorCode.BAD_FORMAT,
        "a WebRTC session sends its video as a track of the same peer connection: declare both"
        " `audio.encoding` and `video.encoding` \"webrtc\", or neither",
    )
    return StartMessage(
        audio=audio,
        language=language,
        task=task,
        prompt=prompt,
        interim_results=_flag(message, "interim_results", True),
        stats=_flag(message, "stats", True),
        video=video,
        interpretations=_kinds(message, ErrorCode.BAD_START),
        instruction=_text(message, "instruction", ErrorCode.BAD_START, MAX_INSTRUCTION_CHARS) or "",
        channels=_channel_labels(message, audio),
        assist=_assist(message),
    )


def _assist(message: dict) -> dict | bool | None:
    value = message.get("assist")
    _require(
        value is None or isinstance(value, (dict, bool)),
        ErrorCode.BAD_START,
        "`assist` must be true, false or an object of agent assist options",
    )
    return value


def _parse_frame(message: dict) -> FrameMessage:
    time = message.get("time")
    _require(
        isinstance(time, (int, float)) and not isinstance(time, bool) and 0 <= time <= MAX_MEDIA_TIME_S,
        ErrorCode.BAD_MESSAGE,
        f"`frame.time` must be the frame's media time in seconds (a number in [0, {MAX_MEDIA_TIME_S:g}])",
    )
    return FrameMessage(float(time))


def _parse_control_update(message: dict) -> ControlUpdate:
    return ControlUpdate(
        prompt=_text(message, "prompt", ErrorCode.BAD_MESSAGE, MAX_PROMPT_CHARS),
        instruction=_text(message, "instruction", ErrorCode.BAD_MESSAGE, MAX_INSTRUCTION_CHARS),
        interpretations=_kinds(message, ErrorCode.BAD_MESSAGE),
    )


MAX_SDP_CHARS = 32_000  # an offer with audio, video and a few dozen candidates is ~6 000


def _parse_offer(message: dict) -> WebRTCOffer:
    sdp = message.get("sdp")
    _require(
        isinstance(sdp, str) and 0 < len(sdp) <= MAX_SDP_CHARS,
        ErrorCode.BAD_OFFER,
        f"`webrtc.offer` needs `sdp`: the offer's session description (a string of at most {MAX_SDP_CHARS} characters)",
    )
    return WebRTCOffer(sdp)


def _parse_candidate(message: dict) -> WebRTCCandidate:
    candidate, mid, index = message.get("candidate"), message.get("sdp_mid"), message.get("sdp_mline_index")
    _require(
        isinstance(candidate, str) and len(candidate) <= 1_000,
        ErrorCode.BAD_MESSAGE,
        "`webrtc.candidate` needs `candidate`: the candidate line (\"\" for end of candidates)",
    )
    _require(mid is None or isinstance(mid, str), ErrorCode.BAD_MESSAGE, "`sdp_mid` must be a string")
    _require(index is None or _is_int(index), ErrorCode.BAD_MESSAGE, "`sdp_mline_index` must be an integer")
    _require(
        not candidate or mid is not None or index is not None,
        ErrorCode.BAD_MESSAGE,
        "`webrtc.candidate` needs `sdp_mid` or `sdp_mline_index`",
    )
    return WebRTCCandidate(candidate, mid, index)


def parse_control(text: str) -> ControlMessage:
    """Parse one text frame into a control message, or raise ProtocolError."""
    _require(len(text) <= MAX_CONTROL_BYTES, ErrorCode.BAD_MESSAGE, "control message too large")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProtocolError(ErrorCode.BAD_JSON, f"text frame is not valid JSON: {error.msg}") from None
    _require(isinstance(message, dict), ErrorCode.BAD_MESSAGE, "a control message must be a JSON object")
    kind = message.get("type")
    if kind == "start":
        return _parse_start(message)
    if kind == "stop":
        return StopMessage()
    if kind == "frame":
        return _parse_frame(message)
    if kind == "control":
        return _parse_control_update(message)
    if kind == "webrtc.offer":
        return _parse_offer(message)
    if kind == "webrtc.candidate":
        return _parse_candidate(message)
    raise ProtocolError(
        ErrorCode.UNKNOWN_MESSAGE, f"unknown message type {kind!r}; expected one of {', '.join(CONTROL_TYPES)}"
    )


def control_to_json(message: ControlMessage) -> str:
    """Client side: the wire form of a control message (only the fields a server needs)."""
    if isinstance(message, StopMessage):
        return json.dumps({"type": "stop"})
    if isinstance(message, FrameMessage):
        return json.dumps({"type": "frame", "time": round(message.time, 6)})
    if isinstance(message, WebRTCOffer):
        return json.dumps({"type": "webrtc.offer", "sdp": message.sdp})
    if isinstance(message, WebRTCCandidate):
        fields = {"candidate": message.candidate, "sdp_mid": message.sdp_mid, "sdp_mline_index": message.sdp_mline_index}
        return json.dumps({"type": "webrtc.candidate", **{key: value for key, value in fields.items() if value is not None}})
    if isinstance(message, ControlUpdate):
        fields = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(message).items()}
        return json.dumps({"type": "control", **{key: value for key, value in fields.items() if value is not None}})
    audio = {key: value for key, value in asdict(message.audio).items() if value is not None}
    payload = {"type": "start", "audio": audio, "language": message.language}
    if message.prompt:
        payload["prompt"] = message.prompt
    if message.video is not None:
        payload["video"] = asdict(message.video)
    if message.interpretations is not None:
        payload["interpretations"] = list(message.interpretations)
    if message.instruction:
        payload["instruction"] = message.instruction
    if message.channels is not None:
        payload["channels"] = list(message.channels)
    if message.assist is not None:
        payload["assist"] = message.assist
    payload.update(interim_results=message.interim_results, stats=message.stats)
    return json.dumps(payload)


# --- server → client -----------------------------------------------------------------------------


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
    protocol: int = PROTOCOL_VERSION  # version of this protocol
    resume_token: str | None = None  # secret that lets a reconnecting client resume (absent: no resume)
    type: str = "ready"


@dataclass(frozen=True)
class CaptionPartial:
    """The current state of an open caption; each partial replaces the previous one with its id."""

    caption_id: str  # stable for the life of the caption; the final carries the same id
    text: str  # the whole caption as it reads now (stable words then tentative ones)
    stable_text: str  # the committed prefix of `text`; it only grows
    start: float  # media seconds of the first word
    end: float  # media seconds of the last word
    words: tuple[WordTiming, ...]  # every word of `text`, stable ones first
    channel: str | None = None  # the audio channel's label in a multichannel session; None = the mix
    type: str = "caption.partial"


@dataclass(frozen=True)
class CaptionFinal:
    """A closed caption; its text never changes again. Finals are never dropped."""

    caption_id: str  # the id its partials carried
    text: str  # the caption's words joined by spaces
    start: float  # media seconds of the first word
    end: float  # media seconds of the last word
    words: tuple[WordTiming, ...]  # all stable
    channel: str | None = None  # the audio channel's label in a multichannel session; None = the mix
    type: str = "caption.final"


@dataclass(frozen=True)
class InterpretationPartial:
    """The current state of an open interpretation; each partial replaces the previous one with its id."""

    interpretation_id: str  # stable for the life of the interpretation; the final carries the same id
    kind: str  # what it interprets: "text" (on-screen text), "scene" (a cut), "description", ...
    text: str  # the interpretation as it reads now
    start: float  # media seconds of the first media it covers
    end: float  # media seconds of the last media it covers
    frame_times: tuple[float, ...] = ()  # media seconds of the video frames it was made from
    channel: str | None = None  # the audio channel's label in a multichannel session; None = the mix (not sent)
    data: dict | None = None  # the kind's structured fields (agent assist: score, intent, ...); None: not sent
    type: str = "interpretation.partial"


@dataclass(frozen=True)
class InterpretationFinal:
    """A closed interpretation; it never changes again and is never dropped."""

    interpretation_id: str  # the id its partials carried
    kind: str  # what it interprets
    text: str  # the interpretation's text
    start: float  # media seconds of the first media it covers
    end: float  # media seconds of the last media it covers
    frame_times: tuple[float, ...] = ()  # media seconds of the video frames it was made from
    channel: str | None = None  # the audio channel's label in a multichannel session; None = the mix (not sent)
    data: dict | None = None  # the kind's structured fields (agent assist: score, intent, ...); None: not sent
    type: str = "interpretation.final"


Interpretation = InterpretationPartial | InterpretationFinal


@dataclass(frozen=True)
class Stats:
    """Periodic health of one session."""

    audio_received_s: float  # media seconds received and decoded
    audio_processed_s: float  # media seconds the engine has looked at
    lag_s: float  # received − processed: how far captions trail the audio
    backlog_s: float  # audio waiting for the model right now
    dropped_audio_s: float  # audio discarded because the model fell behind (never silently)
    partials_coalesced: int  # partials replaced before they were sent (client reading slowly)
    frames_received: int = 0  # video frames received (images, or frames demuxed from a container)
    frames_dropped: int = 0  # video frames dropped under load, latest frame winning (never audio first)
    type: str = "stats"


@dataclass(frozen=True)
class Error:
    """Something went wrong. `fatal` errors end the session; others only reject one message."""

    code: str  # an ErrorCode
    message: str  # for humans
    fatal: bool = False  # True: `ended` follows and the server closes
    retry_after_s: float | None = None  # server_busy: seconds after which trying again makes sense
    type: str = "error"


@dataclass(frozen=True)
class Ended:
    """The session is over; the server closes the websocket after this event."""

    reason: str  # an EndedReason
    audio_received_s: float = 0.0  # media seconds received
    captions: int = 0  # number of finals sent
    type: str = "ended"


@dataclass(frozen=True)
class Resumed:
    """Answer to a resuming websocket: the session goes on; finals it missed follow at once."""

    session_id: str  # the session resumed
    audio_bytes_received: int  # audio bytes the server has; the client sends on from this offset
    finals_replayed: int  # finals re-sent after this event (the client had `finals_received` of them)
    type: str = "resumed"


@dataclass(frozen=True)
class WebRTCAnswer:
    """The server's SDP answer to `webrtc.offer`; its ICE candidates are inside (no trickling)."""

    sdp: str  # the answer's session description
    type: str = "webrtc.answer"


Event = (
    Resumed | Ready | CaptionPartial | CaptionFinal | InterpretationPartial | InterpretationFinal | Stats | Error | Ended | WebRTCAnswer
)
EVENT_TYPES = tuple(
    cls.type
    for cls in (
        Ready, CaptionPartial, CaptionFinal, InterpretationPartial, InterpretationFinal, Stats, Error, Ended, WebRTCAnswer,
        Resumed,
    )
)
CONTROL_TYPES = ("start", "stop", "frame", "control", "webrtc.offer", "webrtc.candidate")


def _rounded(value):
    # Media times travel as seconds with millisecond precision: enough for captions, short JSON.
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


# Fields left out of an event's JSON while they are None (they exist only in some sessions).
_OPTIONAL_FIELDS = ("channel", "data", "resume_token", "retry_after_s")  # + issue 13: resume, retry hint


def event_fields(event: Event) -> dict:
    """An event as the JSON object it is sent as (times rounded, absent optional fields left out)."""
    fields = _rounded(asdict(event))
    for key in _OPTIONAL_FIELDS:
        if fields.get(key, "") is None:
            del fields[key]
    return fields


def to_json(event: Event) -> str:
    """The wire form of an event: one JSON object with a `type` field."""
    return json.dumps(event_fields(event), separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ParsedEvent:
    """A server event as a client sees it: its type and its fields."""

    type: str  # one of EVENT_TYPES, or a newer type this client does not know
    fields: dict = field(default_factory=dict)  # the whole JSON object, `type` included


def parse_event(text: str) -> ParsedEvent:
    """Client side: read one server event (unknown types are kept, for forward compatibility)."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("server event is not a JSON object with a string `type`")
    return ParsedEvent(type=data["type"], fields=data)
