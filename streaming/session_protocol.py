"""The sans-I/O state machine of one native-protocol session.

It is: every decision a session makes. It takes what happened — a text or binary message from
the client, decoded audio, an engine result or failure, the end of the engine's work, a clock
tick, a shutdown request, a lost connection — and answers with actions for its shell (`Open` the
decoder and engine session, `Decode` these bytes, `Submit` this chunk, `FinishMedia`, `Close`,
`Signal` a WebRTC offer or candidate to the peer connection),
while the events to send wait in its outbox (`next_event`). Time is an argument (`now`, loop
seconds), so tests drive it on a fake clock.

It is not: I/O. It never awaits, reads no clock, owns no task, decodes nothing and never calls
the engine; `session.py` does all of that and feeds the outcomes back in.

Phases: AWAITING_START → OPENING → STREAMING → FINISHING → ENDED. A fatal error from any phase
closes the open caption (committed words always reach a final), queues the `error` and `ended`
events, and ends the session.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Callable, Sequence

from patchstream.model.api import (
    AudioChunk,
    CaptionUpdate,
    EngineSpec,
    MediaKind,
    SessionControl,
    SessionOptions,
    StepResult,
    VideoFrame,
    samples_to_seconds,
    seconds_to_samples,
)
from patchstream.streaming.channels import ORDER_SLACK_S, FinalsMerge
from patchstream.streaming.config import LimitsConfig
from patchstream.streaming.frames import (
    ContainerVideo,
    FrameRateGuard,
    FrameSampler,
    ImageQueue,
    QueuedImage,
    probe_image,
)
from patchstream.streaming.outbox import Outbox, OutboxOverflow
from patchstream.streaming.policy import CaptionPolicy, CaptionPolicyConfig, interpretation_event
from patchstream.streaming.protocol import (
    FATAL_SIGNAL_ERRORS,
    FATAL_START_ERRORS,
    CaptionFinal,
    CaptionPartial,
    CodedError,
    ControlMessage,
    ControlUpdate,
    Ended,
    EndedReason,
    Error,
    ErrorCode,
    Event,
    FrameMessage,
    InterpretationFinal,
    ProtocolError,
    Ready,
    Resumed,
    StartMessage,
    Stats,
    StopMessage,
    WebRTCAnswer,
    WebRTCCandidate,
    WebRTCOffer,
    parse_control,
)


MAX_FRAME_LEAD_S = 60.0  # a frame this far ahead of the audio received is a clock bug (the decoded backlog bound)


class Phase(enum.Enum):
    AWAITING_START = "awaiting_start"  # connected; only `start` moves on
    OPENING = "opening"  # `start` accepted; the shell opens the decoder and engine session
    STREAMING = "streaming"  # audio flows
    FINISHING = "finishing"  # `stop` or shutdown: the shell drains media and finishes the engine
    ENDED = "ended"  # nothing more happens; the shell closes


@dataclass(frozen=True)
class Open:
    """Open a decoder for `start.audio` and an engine session with `options`; then call `opened`
    (or `open_failed`)."""

    start: StartMessage  # the accepted `start`
    options: SessionOptions  # what the engine is asked for


@dataclass(frozen=True)
class Decode:
    """Decode these bytes after the ones before, off the event loop; then call `decoded`."""

    data: bytes  # one binary frame, in arrival order


@dataclass(frozen=True)
class DecodeFrame:
    """An image (its header already checked) waits for decode: in order with the audio bytes, ask
    `take_frame(ticket)` for it — None: skip it — decode it off the event loop (off the threads the
    audio of other sessions decodes on), then call `frame_decoded` (or `frame_failed`)."""

    ticket: int  # redeems the image in the protocol's byte-bounded image queue


@dataclass(frozen=True)
class Submit:
    """Queue this media for the engine (the scheduler); report audio drops with `audio_dropped`."""

    chunk: AudioChunk | VideoFrame  # 40 ms audio frames, or one patchified video frame, with media time
    channel: int = 0  # the engine session it is for (multichannel: one per audio channel)


@dataclass(frozen=True)
class Control:
    """Pass this change to the engine session (the scheduler); then call `control_failed` if it refuses."""

    control: SessionControl  # what changes


@dataclass(frozen=True)
class FinishMedia:
    """No more bytes: decode the rest, submit it, finish the engine session; then call `finished`."""


@dataclass(frozen=True)
class Assist:
    """Run `work` off the event loop (agent assist's thread), after the assist work before it; then
    call `assisted` with its events (or `assist_failed`)."""

    work: Callable[[], list[Event]]  # blocking: embeds and scores text
    last: bool = False  # the summary: `ended` waits for it


@dataclass(frozen=True)
class Close:
    """Stop all work, release the decoder and engine session, send what the outbox holds
    (`ended` is last) unless the client is gone, then close the websocket."""

    client_gone: bool = False  # nothing can be sent: close without draining


@dataclass(frozen=True)
class Detach:
    """The client dropped but may resume: stop reading and sending; keep decoding and the engine
    session; events wait in the outbox until `attach` (or the grace period ends)."""


@dataclass(frozen=True)
class Signal:
    """Hand this signalling message to the session's peer connection; then call `answered` (an
    offer) or `signal_failed`."""

    message: WebRTCOffer | WebRTCCandidate  # from the client, in arrival order


Action = Open | Decode | DecodeFrame | Submit | Control | FinishMedia | Assist | Close | Signal | Detach


@dataclass(frozen=True)
class Progress:
    """Not a wire event: queued for protocol adapters that asked for it (`progress_events`), in
    order with the captions, after each engine result. No caption final that starts before
    `watermark` will come any more (see `channels.py`)."""

    watermark: float  # media seconds: no caption final will start before it
    committed_until: float  # media seconds: every word starting before it is committed (stable)
    type: str = "progress"


@dataclass(frozen=True)
class Reply:
    """Not a wire event: a message of a protocol adapter's own protocol, queued in order with the
    session's events and sent as it is (an AudioHook `pong`, an OpenAI `error`, ...)."""

    text: str  # the whole message
    type: str = "reply"


class SessionProtocol:
    """One session's protocol state. Every input method returns the actions it leads to."""

    def __init__(
        self,
        session_id: str,
        engine: EngineSpec,
        limits: LimitsConfig,
        stats_interval_s: float,
        now: float,
        assist: Callable[[object], object] | None = None,
        progress_events: bool = False,
        resume_token: str | None = None,
        resume_grace_s: float = 0.0,
    ):
        self.session_id = session_id
        # Agent assist: `start.assist` → the session's assistant (streaming/assist/), or None.
        self._open_assist = assist
        self._assistant = None  # a CallAssistant once `start` asked for one
        self._assist_failed = False  # analyses stopped after a failure; redaction goes on
        self.phase = Phase.AWAITING_START
        self._engine = engine
        self._limits = limits
        self._stats_interval_s = stats_interval_s
        self._outbox = Outbox(limits.max_pending_finals)
        self._overflowed = False  # a put found the outbox full: the client is not reading
        self._start: StartMessage | None = None
        self._policies: list[CaptionPolicy] = []  # one per captioned channel (one for the mix)
        self._merge: FinalsMerge | None = None  # multichannel: finals in media-time order
        self._progress_events = progress_events  # queue `Progress` markers (protocol adapters)
        self._processed_by_channel: list[float] = []  # media seconds each channel's engine has processed
        self._channels_finished: set[int] = set()  # channels whose engine session finished
        self._start_deadline = now + limits.start_timeout_s
        self._last_input = now  # loop time of the last message, for the idle timeout
        self._next_stats: float | None = None  # loop time the next `stats` is due; None = no stats
        self._received_samples = 0  # media time reached by decoded audio
        self._processed_s = 0.0  # media seconds the engine reported looking at
        self._dropped_samples = 0  # audio the scheduler dropped because the model fell behind
        self._limit_samples = seconds_to_samples(limits.max_session_s)
        self._reason = EndedReason.STOP  # reason of a clean end: stop, or shutdown
        self._frame_time: int | None = None  # media time of the image the next binary message is
        self._refused_image_next = False  # the next binary message is an announced image to drop unread
        self._frame_sampler: FrameSampler | None = None  # the engine's rate: frames not due are never decoded
        self._images = ImageQueue(limits.max_queued_image_bytes)  # images waiting for decode (latest wins)
        self._container_video = ContainerVideo()  # the container's video track so far (counts)
        self._frame_guard: FrameRateGuard | None = None  # the declared rate: far faster is refused
        self._frames_received = 0  # images received (decoded or not); container frames: `_container_video`
        self._frames_dropped_by_engine = 0  # frames the engine skipped under load (its own latest-wins)
        self._frames_refused = 0  # images dropped unread because their announced time was impossible
        self._rate_errors = 0  # frame_rate_exceeded refusals; only the first is reported as an event
        self._offered = False  # WebRTC: an offer was accepted (only one per session)
        self._last_peer_media: float | None = None  # WebRTC: loop time of the answer or the last media since
        # Resume (issue 13). Every final sent, in order: replayed to a client that resumes, and
        # what the shell journals. It grows with the session (captions, not audio: ~1 kB each).
        self.finals: list[CaptionFinal | InterpretationFinal] = []
        self.audio_bytes_received = 0  # audio bytes accepted: the offset a resuming client sends on from
        self._resume_token = resume_token
        self._resume_grace_s = resume_grace_s if resume_token else 0.0
        self._detached_until: float | None = None  # while the client is gone: when the grace period ends

    # -- what the shell reads --------------------------------------------------------------------

    @property
    def receiving(self) -> bool:
        """Whether the shell should read the next client message."""
        return self.phase in (Phase.AWAITING_START, Phase.STREAMING)

    def next_event(self) -> Event | None:
        """The next event to send, or None."""
        return self._outbox.pop()

    def next_deadline(self) -> float | None:
        """The loop time at which `tick` has something to do, if any."""
        if self.phase is Phase.AWAITING_START:
            return self._start_deadline
        deadlines = [self._next_stats] if self.phase in (Phase.STREAMING, Phase.FINISHING) else []
        if self.phase is Phase.STREAMING:
            deadlines.append(self._last_input + self._limits.idle_timeout_s)
            if self._last_peer_media is not None:
                deadlines.append(self._last_peer_media + self._limits.peer_media_timeout_s)
        if self._detached_until is not None:
            deadlines.append(self._detached_until)
        return min((d for d in deadlines if d is not None), default=None)

    # -- client input ----------------------------------------------------------------------------

    def receive_text(self, text: str, now: float) -> list[Action]:
        if not self.receiving:
            return []
        self._last_input = now
        try:
            control = parse_control(text)
        except ProtocolError as error:
            if self.phase is Phase.AWAITING_START and error.code in FATAL_START_ERRORS:
                return self._fail(error.code, error.message)
            return self._error(error.code, error.message)
        return self.receive_control(control, now)

    def receive_control(self, control: ControlMessage, now: float) -> list[Action]:
        """A parsed control message (protocol adapters translate theirs into these)."""
        if not self.receiving:
            return []
        self._last_input = now
        if isinstance(control, StopMessage):
            if self.phase is Phase.AWAITING_START:
                return self._error(ErrorCode.NOT_STARTED, "`stop` received before `start`")
            self.phase = Phase.FINISHING
            return [FinishMedia()]
        if isinstance(control, FrameMessage):
            return self._frame_announced(control)
        if isinstance(control, ControlUpdate):
            return self._control(control)
        if isinstance(control, (WebRTCOffer, WebRTCCandidate)):
            return self._signal(control)
        if self.phase is Phase.STREAMING:
            return self._error(ErrorCode.ALREADY_STARTED, "this session has already started; a second `start` was ignored")
        return self._accept_start(control)

    def _accept_start(self, start: StartMessage) -> list[Action]:
        if start.video is not None and MediaKind.VIDEO not in self._engine.media:
            return self._fail(ErrorCode.BAD_START, f"engine {self._engine.name!r} takes no video; start without `video`")
        unknown = self._unknown_kinds(start.interpretations)
        if unknown:
            return self._fail(ErrorCode.BAD_START, unknown)
        if start.assist is not None or self._open_assist is not None:
            if self._open_assist is None:
                return self._fail(ErrorCode.BAD_START, "this server offers no agent assist")
            try:
                self._assistant = self._open_assist(start.assist)
            except ValueError as error:
                return self._fail(ErrorCode.BAD_START, str(error))
        self._start = start
        self.phase = Phase.OPENING
        if start.video is not None:
            self._frame_sampler = FrameSampler(self._engine.video_fps)
            self._frame_guard = FrameRateGuard(start.video.fps)
        kinds = None if start.interpretations is None else frozenset(start.interpretations)
        options = SessionOptions(
            language=start.language,
            task=start.task,
            prompt=start.prompt,
            instruction=start.instruction,
            interpretations=kinds,
        )
        return [Open(start, options)]

    def _unknown_kinds(self, kinds: tuple[str, ...] | None) -> str:
        """Why these interpretation kinds cannot be served ("" when they can)."""
        unknown = sorted(set(kinds or ()) - self._engine.interpretations)
        if not unknown:
            return ""
        offered = ", ".join(sorted(self._engine.interpretations)) or "none"
        return f"engine {self._engine.name!r} offers no {', '.join(unknown)} interpretations (it offers: {offered})"

    def _frame_announced(self, frame: FrameMessage) -> list[Action]:
        if self.phase is Phase.AWAITING_START:
            return self._error(ErrorCode.NOT_STARTED, "`frame` received before `start`; send `start` first")
        video = self._start.video if self._start else None
        if video is None or not video.is_image:
            return self._error(
                ErrorCode.VIDEO_NOT_DECLARED,
                "`frame` in a session whose `start` declared no jpeg/png `video`; the frame will be read as audio",
            )
        lead_s = frame.time - samples_to_seconds(self._received_samples)
        if lead_s > MAX_FRAME_LEAD_S:
            self._refused_image_next = True  # the image that follows is dropped, never taken as audio
            return self._error(
                ErrorCode.BAD_MESSAGE,
                f"`frame.time` {frame.time:g} s is {lead_s:.0f} s ahead of the audio received; frame times are media"
                " seconds on the audio's clock (milliseconds sent by mistake?); the frame will be dropped",
            )
        self._frame_time = seconds_to_samples(frame.time)
        return []

    def _control(self, update: ControlUpdate) -> list[Action]:
        if self.phase is not Phase.STREAMING:
            return self._error(ErrorCode.NOT_STARTED, "`control` is accepted only while the session streams")
        unknown = self._unknown_kinds(update.interpretations)
        if unknown:
            return self._error(ErrorCode.UNSUPPORTED_CONTROL, unknown)
        kinds = None if update.interpretations is None else frozenset(update.interpretations)
        return [Control(SessionControl(update.prompt, update.instruction, kinds))]

    def _signal(self, message: WebRTCOffer | WebRTCCandidate) -> list[Action]:
        if self.phase is not Phase.STREAMING:
            return self._error(ErrorCode.NOT_STARTED, "WebRTC signalling is accepted only while the session streams")
        if not self._start.audio.is_webrtc:
            return self._error(
                ErrorCode.BAD_MESSAGE, "WebRTC signalling in a session whose `start` declared no `webrtc` audio; ignored"
            )
        if isinstance(message, WebRTCOffer):
            if self._offered:
                return self._error(ErrorCode.BAD_OFFER, "a second offer: renegotiation is not supported; ignored")
            self._offered = True
        elif not self._offered:
            return self._error(ErrorCode.BAD_MESSAGE, "an ICE candidate before `webrtc.offer`; send the offer first")
        return [Signal(message)]

    def answered(self, sdp: str, now: float) -> list[Action]:
        """The peer connection answered the offer: send it; media must now come within the timeout."""
        if self.phase is not Phase.STREAMING:
            return []
        self._last_peer_media = now
        return self._send(WebRTCAnswer(sdp))

    def signal_failed(self, error: CodedError) -> list[Action]:
        """The offer could not be answered (fatal), or a candidate was refused (not fatal)."""
        if error.code in FATAL_SIGNAL_ERRORS and self.phase is Phase.STREAMING:
            return self._fail(error.code, error.message)
        return self._error(error.code, error.message)

    def peer_media(self, now: float) -> list[Action]:
        """Media arrived on the peer connection: the peer is alive and the session not idle."""
        if self._last_peer_media is not None:
            self._last_peer_media = now
        self._last_input = now
        return []

    def peer_lost(self, reason: str) -> list[Action]:
        """The peer connection failed, closed or its track ended while the session streamed."""
        if self.phase is not Phase.STREAMING:
            return []  # after `stop` the client closing its peer is the normal end
        return self._fail(ErrorCode.PEER_LOST, f"{reason}; the session ends (reconnect to go on)")

    def control_failed(self, error: Exception) -> list[Action]:
        """The engine refused a `control` change; the session goes on as before."""
        return self._error(ErrorCode.UNSUPPORTED_CONTROL, f"the engine refused the change: {error}")

    def receive_bytes(self, data: bytes, now: float) -> list[Action]:
        if not self.receiving:
            return []
        self._last_input = now
        if self.phase is Phase.AWAITING_START:
            return self._error(ErrorCode.NOT_STARTED, "binary audio received before `start`; send `start` first")
        if self._start is not None and self._start.audio.is_webrtc:
            return self._error(ErrorCode.BAD_MESSAGE, "binary data in a WebRTC session: media travels on the peer connection; dropped")
        if self._refused_image_next:
            self._refused_image_next = False
            self._frames_received += 1
            self._frames_refused += 1
            return []
        if self._frame_time is not None:
            start_sample, self._frame_time = self._frame_time, None
            return self._image(data, start_sample)
        if len(data) > self._limits.max_frame_bytes:
            return self._error(
                ErrorCode.FRAME_TOO_LARGE,
                f"binary frame of {len(data)} bytes exceeds the {self._limits.max_frame_bytes}-byte limit;"
                " it was dropped — send smaller frames",
            )
        self.audio_bytes_received += len(data)
        return [Decode(data)] if data else []

    def _image(self, data: bytes, start_sample: int) -> list[Action]:
        """One announced image: refuse what must not be decoded, skip what the engine would not take."""
        self._frames_received += 1
        if len(data) > self._limits.max_image_bytes:
            return self._error(
                ErrorCode.FRAME_TOO_LARGE,
                f"an image of {len(data)} bytes exceeds the {self._limits.max_image_bytes}-byte limit; it was dropped",
            )
        try:
            self._frame_guard.check(start_sample)
            info = probe_image(data, self._limits.max_image_pixels)
        except CodedError as error:
            if error.code == ErrorCode.FRAME_RATE_EXCEEDED:
                self._rate_errors += 1
                if self._rate_errors > 1:
                    return []  # reported once; `stats.frames_dropped` keeps counting
            return self._error(error.code, error.message)
        if not self._frame_sampler.due(start_sample):
            return []  # not due at the engine's rate, even after the last frame decoded: never decoded
        return [DecodeFrame(self._images.put(QueuedImage(data, info, start_sample)))]

    def take_frame(self, ticket: int) -> QueuedImage | None:
        """The image to decode now, or None: a newer image pushed it out of the queue (counted as
        dropped), or a frame decoded since it was queued makes it not due (sampled out)."""
        image = self._images.take(ticket)
        if image is None or self.phase not in (Phase.STREAMING, Phase.FINISHING):
            return None
        return image if self._frame_sampler.due(image.start_sample) else None

    def frame_decoded(self, frame: VideoFrame) -> list[Action]:
        """A decoded, patchified image: it takes the sampler's slot (a bad image never does), submit it."""
        if self.phase not in (Phase.STREAMING, Phase.FINISHING) or not self._frame_sampler.admit(frame.start_sample):
            return []
        return [Submit(frame)]

    def frame_failed(self, error: CodedError) -> list[Action]:
        """One image could not be decoded: it is dropped, the session goes on."""
        return self._error(error.code, error.message)

    def container_video(self, video: ContainerVideo) -> list[Action]:
        """What the container's video track produced (already sampled and patchified by the demux
        thread): submit the frames; a track switched off is one non-fatal error, the audio goes on."""
        if self.phase not in (Phase.STREAMING, Phase.FINISHING):
            return []
        self._container_video = video
        actions: list[Action] = [Submit(frame) for frame in video.frames]
        if video.error is not None:
            actions += self._error(video.error.code, video.error.message)
        return actions

    # -- outcomes of the shell's work ------------------------------------------------------------

    def opened(self, now: float) -> list[Action]:
        """The decoder and the engine session are open: audio may flow."""
        if self.phase is not Phase.OPENING:
            return []
        self.phase = Phase.STREAMING
        self._last_input = now
        labels = self.channel_labels
        self._policies = [
            CaptionPolicy(CaptionPolicyConfig(interim_results=self._start.interim_results, channel=label))
            for label in labels
        ]
        self._processed_by_channel = [0.0] * len(labels)
        self._merge = FinalsMerge(len(labels)) if len(labels) > 1 else None
        if self._start.stats:
            self._next_stats = now + self._stats_interval_s
        return self._send(Ready(self.session_id, self._engine.name, self._engine.sample_rate, resume_token=self._resume_token))

    def open_failed(self, error: CodedError) -> list[Action]:
        return self._fail(error.code, error.message, getattr(error, "retry_after_s", None))

    @property
    def channel_labels(self) -> tuple[str | None, ...]:
        """One entry per engine session the shell opens: the labels, or (None,) for the mix."""
        if self._start is None or self._start.channels is None:
            return (None,)
        return self._start.channels

    def decoded(self, chunks: Sequence[AudioChunk], channel: int = 0) -> list[Action]:
        """Audio of one channel (0: the mix) came out of the decoder and chunker: submit it,
        within the session's media limit."""
        if self.phase not in (Phase.STREAMING, Phase.FINISHING):
            return []
        actions: list[Action] = []
        for chunk in chunks:
            if chunk.end_sample > self._limit_samples:
                return actions + self._fail(
                    ErrorCode.SESSION_LIMIT, f"session exceeded {self._limits.max_session_s:g} s of media"
                )
            self._received_samples = max(self._received_samples, chunk.end_sample)
            actions.append(Submit(chunk, channel))
        return actions

    def audio_dropped(self, samples: int) -> list[Action]:
        self._dropped_samples += samples
        return self._error(
            ErrorCode.AUDIO_DROPPED, f"the model fell behind; dropped {samples_to_seconds(samples):.2f} s of audio"
        )

    def media_failed(self, error: CodedError) -> list[Action]:
        """The decoder gave up on the client's bytes."""
        code = error.code if error.code in ErrorCode.__members__.values() else ErrorCode.INTERNAL_ERROR
        return self._fail(code, error.message)

    def engine_result(self, result: StepResult, channel: int = 0) -> list[Action]:
        """One step's result for the engine session of `channel`."""
        if self.phase not in (Phase.STREAMING, Phase.FINISHING):
            return []
        self._note_processed(channel, result.processed_until)
        self._frames_dropped_by_engine += result.dropped_frames
        captions, analyses = self._captions(channel, self._policies[channel].update(result.captions))
        return self._send(*captions, *self._interpretations(channel, result), *self._progress()) + analyses

    def engine_failed(self, error: Exception) -> list[Action]:
        return self._fail(ErrorCode.ENGINE_ERROR, f"the model failed on this session's audio: {error}")

    def finished(self, result: StepResult, channel: int = 0) -> list[Action]:
        """The engine session of `channel` committed everything; when every channel has, the last
        finals, then `ended`."""
        if self.phase is not Phase.FINISHING or channel in self._channels_finished:
            return []
        self._note_processed(channel, result.processed_until)
        self._channels_finished.add(channel)
        policy = self._policies[channel]
        finals = policy.finish(result.captions)
        captions, analyses = self._captions(channel, finals, finished=True)
        actions = self._send(*captions, *self._interpretations(channel, result)) + analyses
        if len(self._channels_finished) < len(self._policies):
            return actions + self._send(*self._progress())
        actions += self._send(*self._progress())
        if self._assistant is not None and self._assistant.config.analyses and not self._assist_failed:
            return actions + [Assist(self._assistant.summarize, last=True)]  # `ended` after the summary
        return actions + self._end(self._reason)

    # -- captions: every caption event passes here ------------------------------------------------

    def _captions(
        self, channel: int, events: Sequence[Event], finished: bool = False
    ) -> tuple[list[Event], list[Action]]:
        """A channel's caption events → what is sent (finals in media-time order across channels,
        then partials, each through agent assist) and the assist work they start."""
        finals = [event for event in events if isinstance(event, CaptionFinal)]
        if self._merge is not None:
            finals = self._merge.add(channel, finals, self._watermark(channel))
            if finished:
                finals += self._merge.finish(channel)
        return self._assisted([*finals, *(event for event in events if isinstance(event, CaptionPartial))])

    def _watermark(self, channel: int) -> float:
        """No final of this channel will start before this media time (see `channels.py`)."""
        policy = self._policies[channel]
        processed = self._processed_by_channel[channel] - ORDER_SLACK_S
        return processed if policy.open_start is None else min(policy.open_start, processed)

    def _committed_until(self, channel: int) -> float:
        """Every word of this channel starting before this media time is committed: the engine has
        processed the audio up to there and holds no tentative word from before it."""
        tentative = self._policies[channel].tentative_start
        processed = self._processed_by_channel[channel]
        return processed if tentative is None else min(tentative, processed)

    def _note_processed(self, channel: int, processed_s: float) -> None:
        self._processed_s = max(self._processed_s, processed_s)
        self._processed_by_channel[channel] = max(self._processed_by_channel[channel], processed_s)

    def _interpretations(self, channel: int, result: StepResult) -> list[Event]:
        label = self.channel_labels[channel]
        return [interpretation_event(update, label) for update in result.interpretations]

    def _progress(self) -> list[Event]:
        if not self._progress_events or not self._policies:
            return []
        live = [index for index in range(len(self._policies)) if index not in self._channels_finished]
        committed = [self._committed_until(index) for index in live]
        watermark = min((self._watermark(index) for index in live), default=float("inf"))
        return [Progress(watermark, min(committed, default=float("inf")))]

    def reply(self, text: str) -> list[Action]:
        """Queue a protocol adapter's own message, in order with the session's events."""
        return self._send(Reply(text))

    def touch(self, now: float) -> None:
        """A client message arrived that a protocol adapter consumed itself (a ping, a pause): it
        counts as activity for the idle timeout, as every native message does."""
        if self.receiving:
            self._last_input = now

    # -- agent assist (streaming/assist/): the one place captions pass through it ----------------

    def _assisted(self, events: Sequence[Event]) -> tuple[list[Event], list[Action]]:
        """Captions with PII masked before they are queued (on the loop: cheap), and the analyses
        of the finals for the assist thread. A redaction bug raises: the session fails closed."""
        if self._assistant is None:
            return list(events), []
        out: list[Event] = []
        analyses: list[Action] = []
        for event in events:
            if isinstance(event, (CaptionPartial, CaptionFinal)):
                event = self._assistant.caption(event)
                if isinstance(event, CaptionFinal) and self._assistant.config.analyses and not self._assist_failed:
                    analyses.append(Assist(functools.partial(self._assistant.analyze, event)))
            out.append(event)
        return out, analyses

    def assisted(self, events: Sequence[Event], last: bool = False) -> list[Action]:
        """Assist events are ready; after the summary (`last`) the session ends."""
        if self.phase not in (Phase.STREAMING, Phase.FINISHING):
            return []
        actions = self._send(*events)
        return actions + self._end(self._reason) if last and self.phase is Phase.FINISHING else actions

    def assist_failed(self, error: Exception, last: bool = False) -> list[Action]:
        """Assist failed on this session: say so once, stop analysing; captions (still redacted) go on."""
        if self.phase not in (Phase.STREAMING, Phase.FINISHING):
            return []
        actions = [] if self._assist_failed else self._error(
            ErrorCode.ASSIST_FAILED, f"agent assist failed and is off for this session: {type(error).__name__}"
        )
        self._assist_failed = True
        return actions + self._end(self._reason) if last and self.phase is Phase.FINISHING else actions

    # -- clock and lifecycle ---------------------------------------------------------------------

    def tick(self, now: float, backlog_s: float = 0.0, frames_dropped: int = 0) -> list[Action]:
        """Time passed: timeouts and periodic stats. `backlog_s` is audio waiting for the model,
        `frames_dropped` the video frames the scheduler replaced (latest frame wins); the frames
        dropped before it (refused, pushed out of the image queue or the demuxer's) are counted here."""
        if self.phase is Phase.AWAITING_START and now >= self._start_deadline:
            return self._fail(ErrorCode.START_TIMEOUT, f"no `start` message within {self._limits.start_timeout_s:g} s")
        if self._detached_until is not None and self.phase is Phase.STREAMING and now >= self._detached_until:
            return self._abandon()
        if self.phase is Phase.STREAMING and self._detached_until is None and now - self._last_input >= self._limits.idle_timeout_s:
            return self._fail(ErrorCode.IDLE_TIMEOUT, f"nothing received for {self._limits.idle_timeout_s:g} s")
        timeout_s = self._limits.peer_media_timeout_s
        if self.phase is Phase.STREAMING and self._last_peer_media is not None and now - self._last_peer_media >= timeout_s:
            return self._fail(
                ErrorCode.PEER_LOST, f"no media from the WebRTC peer for {timeout_s:g} s (packets lost or the peer vanished)"
            )
        if self.phase in (Phase.STREAMING, Phase.FINISHING) and self._next_stats is not None and now >= self._next_stats:
            self._next_stats = now + self._stats_interval_s
            return self._send(self._stats(backlog_s, frames_dropped))
        return []

    def shutdown(self) -> list[Action]:
        """The server is stopping: say so, then finish like a `stop` (flushing every word)."""
        if self.phase is Phase.STREAMING:
            self._reason = EndedReason.SHUTDOWN
            self.phase = Phase.FINISHING
            return self._send(Error(ErrorCode.SHUTTING_DOWN, "the server is shutting down; flushing captions", True)) + [
                FinishMedia()
            ]
        if self.phase is Phase.FINISHING:
            return []
        return self._fail(ErrorCode.SHUTTING_DOWN, "the server is shutting down")

    # -- resume (issue 13) ------------------------------------------------------------------------

    @property
    def detached(self) -> bool:
        """The client dropped and the session waits for it to resume."""
        return self._detached_until is not None

    @property
    def resumable(self) -> bool:
        """A drop now would leave the session waiting for its client."""
        return self.phase is Phase.STREAMING and self._resume_grace_s > 0

    @property
    def received_s(self) -> float:
        """Media seconds of audio received (what a key's media minutes are charged)."""
        return samples_to_seconds(self._received_samples)

    @property
    def ended_reason(self) -> EndedReason:
        """Why the session ended (or will, as it stands)."""
        return self._reason

    def detach(self, now: float) -> list[Action]:
        """The connection dropped. A streaming session that may resume waits `resume_grace_s`
        for its client; anything else ends as on `connection_lost`."""
        if self.detached:
            return []
        if not self.resumable:
            return self.connection_lost()
        self._detached_until = now + self._resume_grace_s
        return [Detach()]

    def attach(self, finals_received: int, now: float) -> list[Action]:
        """The client is back, holding the first `finals_received` finals: `resumed`, the finals it
        missed, then what waited (finals already replayed are not sent twice)."""
        if not self.detached:
            raise ProtocolError(ErrorCode.RESUME_FAILED, "this session is not waiting for a resume")
        if not 0 <= finals_received <= len(self.finals):
            raise ProtocolError(ErrorCode.RESUME_FAILED, f"finals_received must be in 0..{len(self.finals)}")
        self._detached_until = None
        self._last_input = now
        waiting = self._outbox
        self._outbox = Outbox(self._limits.max_pending_finals)
        self._outbox.coalesced = waiting.coalesced
        missed = self.finals[finals_received:]
        events: list[Event] = [Resumed(self.session_id, self.audio_bytes_received, len(missed)), *missed]
        while (event := waiting.pop()) is not None:
            if not isinstance(event, (CaptionFinal, InterpretationFinal)):
                events.append(event)
        for event in events:
            self._put_unrecorded(event)
        return self._send()

    def _abandon(self) -> list[Action]:
        """The grace period ended without a resume: finish like `stop` (every word reaches the
        journal), with nobody to send to."""
        self._detached_until = None
        self._reason = EndedReason.DISCONNECTED
        self.phase = Phase.FINISHING
        return [FinishMedia()]

    def connection_lost(self) -> list[Action]:
        """The websocket closed or a send blocked for the send timeout: nobody is listening."""
        if self.phase is Phase.ENDED:
            return []
        self.phase = Phase.ENDED
        return [Close(client_gone=True)]

    def internal_error(self, error: Exception) -> list[Action]:
        """A server bug in this session's shell: it ends only this session."""
        return self._fail(ErrorCode.INTERNAL_ERROR, f"internal server error: {error!r}")

    # -- helpers ---------------------------------------------------------------------------------

    def _stats(self, backlog_s: float, frames_dropped: int) -> Stats:
        received = samples_to_seconds(self._received_samples)
        return Stats(
            audio_received_s=received,
            audio_processed_s=self._processed_s,
            lag_s=max(0.0, received - self._processed_s),
            backlog_s=backlog_s,
            dropped_audio_s=samples_to_seconds(self._dropped_samples),
            partials_coalesced=self._outbox.coalesced,
            frames_received=self._frames_received + self._container_video.received,
            frames_dropped=frames_dropped
            + self._frames_dropped_by_engine
            + self._rate_errors
            + self._frames_refused
            + self._images.dropped
            + self._container_video.dropped,
        )

    def _put_unrecorded(self, event: Event) -> None:
        try:
            self._outbox.put(event)
        except OutboxOverflow:
            self._overflowed = True

    def _send(self, *events: Event) -> list[Action]:
        for event in events:
            if isinstance(event, (CaptionFinal, InterpretationFinal)):
                self.finals.append(event)
            self._put_unrecorded(event)
        if self._overflowed and self.phase is not Phase.ENDED:
            return self._fail(ErrorCode.SLOW_CONSUMER, "the client is not reading events")
        return []

    def _error(self, code: ErrorCode, message: str) -> list[Action]:
        return self._send(Error(code, message, fatal=False))

    def _fail(self, code: str, message: str, retry_after_s: float | None = None) -> list[Action]:
        """A fatal error: close the open caption, then `error` and `ended`."""
        if self.phase is Phase.ENDED:
            return []
        events: list[Event] = []
        finals = [final for policy in self._policies for final in policy.finish(CaptionUpdate())]
        if self._merge is not None:
            finals = sorted(self._merge.flush() + finals, key=lambda final: final.start)
        try:
            events += self._assisted(finals)[0]  # committed words always reach a final
        except Exception:  # noqa: BLE001 - redaction failed: the words are dropped, never sent unmasked
            pass
        self._reason = EndedReason.for_error(code)
        self.phase = Phase.ENDED  # before sending: an overflow now must not fail again
        self._send(*events, Error(code, message, fatal=True, retry_after_s=retry_after_s))
        return self._end(self._reason)

    def _end(self, reason: EndedReason) -> list[Action]:
        self.phase = Phase.ENDED
        finals = sum(policy.finals_emitted for policy in self._policies)
        self._send(Ended(reason, samples_to_seconds(self._received_samples), finals))
        client_gone = self._detached_until is not None or reason is EndedReason.DISCONNECTED
        self._detached_until = None  # an ended session cannot be resumed
        return [Close(client_gone=True)] if client_gone else [Close()]
