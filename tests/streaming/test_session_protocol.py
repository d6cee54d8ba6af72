"""The sans-I/O session state machine, driven message by message on a fake clock."""

from __future__ import annotations

import json

import numpy as np
import pytest

from patchstream.model.api import AudioChunk, CaptionUpdate, EngineSpec, InterpretationUpdate, MediaKind, StepResult, VideoFrame, Word
from patchstream.streaming.config import LimitsConfig
from patchstream.streaming.frames import ContainerVideo
from patchstream.streaming.protocol import CodedError, ErrorCode
from patchstream.streaming.session_protocol import Close, Decode, DecodeFrame, FinishMedia, Open, Phase, SessionProtocol, Submit

START = json.dumps({"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 1}})
STOP = json.dumps({"type": "stop"})
LIMITS = LimitsConfig(start_timeout_s=10.0, idle_timeout_s=60.0, max_frame_bytes=100, max_pending_finals=5, max_session_s=1.0)
STATS_EVERY_S = 2.0


def new(now: float = 0.0, limits: LimitsConfig = LIMITS) -> SessionProtocol:
    return SessionProtocol("s-test", EngineSpec("fake"), limits, STATS_EVERY_S, now)


def drain(protocol: SessionProtocol) -> list[dict]:
    """The events queued so far, as the client would read them."""
    events = []
    while (event := protocol.next_event()) is not None:
        events.append({key: value for key, value in vars(event).items() if value is not None})  # as to_json: None is absent
    return events


def started(now: float = 0.0) -> SessionProtocol:
    protocol = new(now)
    actions = protocol.receive_text(START, now)
    assert [type(a) for a in actions] == [Open] and actions[0].options.language == "en"
    assert protocol.opened(now) == []
    assert [e["type"] for e in drain(protocol)] == ["ready"]
    return protocol


def chunk(start_frame: int, frames: int = 1) -> AudioChunk:
    return AudioChunk(np.zeros(640 * frames, np.float32), 640 * start_frame)


def word(text: str, start: float) -> Word:
    return Word(text, start, start + 0.2)


def test_start_opens_and_ready_follows_the_open():
    protocol = new()
    assert protocol.phase is Phase.AWAITING_START
    (action,) = protocol.receive_text(START, 0.0)
    assert isinstance(action, Open) and protocol.phase is Phase.OPENING and not protocol.receiving
    assert drain(protocol) == []  # no `ready` before the decoder and engine are open
    protocol.opened(0.5)
    assert drain(protocol)[0] == {"type": "ready", "session_id": "s-test", "engine": "fake", "sample_rate": 16_000, "protocol": 1}


def test_audio_and_stop_before_start_are_rejected_without_ending():
    protocol = new()
    assert protocol.receive_bytes(b"\x00\x01", 1.0) == []
    assert protocol.receive_text(STOP, 1.0) == []
    assert [(e["code"], e["fatal"]) for e in drain(protocol)] == [("not_started", False)] * 2
    assert protocol.phase is Phase.AWAITING_START


def test_a_start_that_cannot_be_served_ends_the_session():
    protocol = new()
    actions = protocol.receive_text(json.dumps({"type": "start", "audio": {"encoding": "opus"}}), 0.0)
    assert actions == [Close()]
    events = drain(protocol)
    assert [(e["type"], e.get("code"), e.get("reason")) for e in events] == [
        ("error", "unsupported_encoding", None),
        ("ended", None, "error"),
    ]


def test_start_timeout_fires_on_the_clock_not_before():
    protocol = new(now=100.0)
    assert protocol.next_deadline() == 110.0
    assert protocol.tick(109.9) == []
    assert protocol.tick(110.0) == [Close()]
    assert [e.get("code") for e in drain(protocol)] == ["start_timeout", None]


def test_frames_are_decoded_in_order_and_oversized_ones_dropped():
    protocol = started()
    assert protocol.receive_bytes(b"a" * 10, 1.0) == [Decode(b"a" * 10)]
    assert protocol.receive_bytes(b"b" * 101, 1.1) == []
    assert protocol.receive_bytes(b"", 1.2) == []
    assert [(e["code"], e["fatal"]) for e in drain(protocol)] == [("frame_too_large", False)]


def test_decoded_audio_is_submitted_until_the_media_limit():
    protocol = started()
    chunks = [chunk(0, 10), chunk(10, 10)]
    actions = protocol.decoded(chunks)
    assert [type(a) for a in actions] == [Submit, Submit] and all(a.chunk is c for a, c in zip(actions, chunks))
    actions = protocol.decoded([chunk(20, 10)])  # past 1.0 s of media
    assert actions == [Close()]
    assert [e.get("reason") or e.get("code") for e in drain(protocol)] == ["session_limit", "limit"]


def test_idle_timeout_counts_from_the_last_message():
    protocol = started(now=0.0)
    protocol.receive_bytes(b"x", 30.0)
    protocol.tick(89.0)
    assert protocol.phase is Phase.STREAMING
    assert protocol.tick(90.0) == [Close()]
    assert drain(protocol)[-1]["reason"] == "idle"


def test_stats_come_every_interval_with_progress():
    protocol = started(now=0.0)
    protocol.decoded([chunk(0, 25)])  # 1 s received
    protocol.engine_result(StepResult(CaptionUpdate(processed_until=0.6)))
    drain(protocol)
    assert protocol.next_deadline() == STATS_EVERY_S
    protocol.tick(1.9, backlog_s=0.4)
    assert drain(protocol) == []
    protocol.tick(2.0, backlog_s=0.4)
    (stats,) = drain(protocol)
    assert (stats["type"], stats["audio_received_s"], stats["audio_processed_s"], stats["backlog_s"]) == ("stats", 1.0, 0.6, 0.4)
    assert stats["lag_s"] == 1.0 - 0.6


def test_captions_and_interpretations_flow_from_engine_results():
    protocol = started()
    interpretation = InterpretationUpdate("v0", "a red square", 0.0, 0.0, False, "description", (0.0,))
    protocol.engine_result(StepResult(CaptionUpdate(committed=(word("Hello.", 0.0),)), (interpretation,)))
    events = drain(protocol)
    assert [e["type"] for e in events] == ["caption.final", "interpretation.partial"]
    assert events[1] == {
        "type": "interpretation.partial", "interpretation_id": "v0", "kind": "description", "text": "a red square",
        "start": 0.0, "end": 0.0, "frame_times": (0.0,),
    }
    protocol.engine_result(StepResult(interpretations=(InterpretationUpdate("v0", "a red square", 0.0, 1.0, True, "description"),)))
    (final,) = drain(protocol)
    assert (final["type"], final["end"]) == ("interpretation.final", 1.0)


def test_stop_finishes_the_media_then_ends_after_the_last_finals():
    protocol = started()
    protocol.engine_result(StepResult(CaptionUpdate(committed=(word("one", 0.0),), tentative=(word("two", 0.3),))))
    drain(protocol)
    assert protocol.receive_text(STOP, 1.0) == [FinishMedia()]
    assert protocol.phase is Phase.FINISHING and not protocol.receiving
    assert protocol.receive_bytes(b"late", 1.1) == []  # nothing is read after stop
    actions = protocol.finished(StepResult(CaptionUpdate(committed=(word("two", 0.3),))))
    assert actions == [Close()]
    events = drain(protocol)
    assert [e["type"] for e in events] == ["caption.final", "ended"]
    assert events[0]["text"] == "one two" and events[1] == {"type": "ended", "reason": "stop", "audio_received_s": 0.0, "captions": 1}


def test_a_fatal_error_still_delivers_committed_words_as_a_final():
    protocol = started()
    protocol.engine_result(StepResult(CaptionUpdate(committed=(word("kept", 0.0),), tentative=(word("lost", 0.3),))))
    drain(protocol)
    assert protocol.engine_failed(RuntimeError("boom")) == [Close()]
    events = drain(protocol)
    assert [(e["type"], e.get("text") or e.get("code")) for e in events[:2]] == [("caption.final", "kept"), ("error", "engine_error")]
    assert events[-1]["reason"] == "error"
    assert protocol.engine_result(StepResult(CaptionUpdate(committed=(word("more", 1.0),)))) == []  # ended is ended


def test_shutdown_while_streaming_flushes_like_stop():
    protocol = started()
    assert protocol.shutdown() == [FinishMedia()]
    assert drain(protocol)[0]["code"] == "shutting_down"
    protocol.finished(StepResult())
    assert drain(protocol)[-1]["reason"] == "shutdown"


def test_shutdown_before_start_ends_at_once():
    protocol = new()
    assert protocol.shutdown() == [Close()]
    assert [e.get("code") or e.get("reason") for e in drain(protocol)] == ["shutting_down", "shutdown"]


def test_a_client_that_does_not_read_ends_as_a_slow_consumer():
    protocol = started()
    actions = []
    for _ in range(10):  # every unknown message earns an undroppable error; 5 may wait
        actions += protocol.receive_text('{"type": "dance"}', 1.0)
    assert actions == [Close()] and protocol.phase is Phase.ENDED


def test_a_lost_connection_closes_without_events():
    protocol = started()
    assert protocol.connection_lost() == [Close(client_gone=True)]
    assert drain(protocol) == [] and protocol.connection_lost() == []


def test_engine_refusing_the_options_is_a_bad_start():
    protocol = new()
    protocol.receive_text(START, 0.0)
    assert protocol.open_failed(CodedError(ErrorCode.BAD_START, "German is not served")) == [Close()]
    assert drain(protocol)[0] == {"type": "error", "code": "bad_start", "message": "German is not served", "fatal": True}


def test_decoder_bugs_are_internal_errors_not_client_codes():
    protocol = started()
    protocol.media_failed(CodedError("decoder_closed", "decode after close"))
    assert drain(protocol)[0]["code"] == "internal_error"


PNG_640x360 = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + (640).to_bytes(4, "big") + (360).to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"


def video_protocol(engine_fps: float = 1.0, sent_fps: float = 4, limits: LimitsConfig = LimitsConfig()) -> SessionProtocol:
    spec = EngineSpec("seer", media=frozenset({MediaKind.AUDIO, MediaKind.VIDEO}), video_fps=engine_fps, interpretations=frozenset({"text"}))
    protocol = SessionProtocol("s-video", spec, limits, STATS_EVERY_S, 0.0)
    start = {**json.loads(START), "video": {"encoding": "jpeg", "fps": sent_fps}, "interpretations": ["text"], "stats": True}
    (open_,) = protocol.receive_text(json.dumps(start), 0.0)
    assert open_.options.interpretations == {"text"}
    protocol.opened(0.0)
    drain(protocol)
    return protocol


def announce(protocol: SessionProtocol, time_s: float, data: bytes = PNG_640x360) -> list:
    assert protocol.receive_text(json.dumps({"type": "frame", "time": time_s}), 0.1) == []
    return protocol.receive_bytes(data, 0.1)


def decoded_frame(start_sample: int) -> VideoFrame:
    return VideoFrame(np.zeros((48, 48, 3), np.uint8), start_sample)


def test_images_not_due_at_the_engines_rate_are_never_decoded_and_the_header_is_checked_first():
    protocol = video_protocol()
    submitted = []
    for quarter in range(8):  # 4 fps sent, 1 fps wanted; each image decoded as the shell would
        for action in announce(protocol, quarter / 4):
            image = protocol.take_frame(action.ticket)
            assert image.info.width == 640
            submitted += protocol.frame_decoded(decoded_frame(image.start_sample))
    assert [a.chunk.start_sample for a in submitted] == [0, 16_000]
    assert drain(protocol) == []  # sampling is not an error


def test_an_image_queued_before_the_frame_ahead_of_it_decoded_is_sampled_out_at_decode_time():
    protocol = video_protocol()
    queued = [a for q in range(3) for a in announce(protocol, q / 4)]  # nothing decoded yet: all queued
    assert [type(a) for a in queued] == [DecodeFrame] * 3
    first = protocol.take_frame(queued[0].ticket)
    assert protocol.frame_decoded(decoded_frame(first.start_sample))
    assert [protocol.take_frame(a.ticket) for a in queued[1:]] == [None, None]  # not due after 0.0: not decoded


def test_a_bad_image_does_not_take_the_samplers_slot_from_the_next_good_one():
    protocol = video_protocol(engine_fps=2.0)
    (first,) = announce(protocol, 0.0)
    protocol.frame_decoded(decoded_frame(protocol.take_frame(first.ticket).start_sample))
    (bad,) = announce(protocol, 0.5)
    assert protocol.take_frame(bad.ticket) is not None
    protocol.frame_failed(CodedError(ErrorCode.BAD_IMAGE, "corrupt"))
    (good,) = announce(protocol, 0.75)  # due after 0.0, the last frame decoded (not after the bad 0.5)
    image = protocol.take_frame(good.ticket)
    assert [a.chunk.start_sample for a in protocol.frame_decoded(decoded_frame(image.start_sample))] == [12_000]
    assert [e["code"] for e in drain(protocol)] == ["bad_image"]


def test_images_waiting_for_decode_are_bounded_in_bytes_and_the_latest_wins():
    big = PNG_640x360 + bytes(1_000)
    protocol = video_protocol(engine_fps=4.0, limits=LimitsConfig(max_queued_image_bytes=2 * len(big)))
    queued = [a for q in range(5) for a in announce(protocol, q / 4, big)]  # the decoder is busy: all wait
    assert [protocol.take_frame(a.ticket) is not None for a in queued] == [False, False, False, True, True]
    protocol.tick(STATS_EVERY_S, 0.0, 0)
    (stats,) = [e for e in drain(protocol) if e["type"] == "stats"]
    assert (stats["frames_received"], stats["frames_dropped"]) == (5, 3)


def test_container_video_is_submitted_counted_and_a_broken_track_is_one_non_fatal_error():
    spec = EngineSpec("seer", media=frozenset({MediaKind.AUDIO, MediaKind.VIDEO}), video_fps=1.0)
    protocol = SessionProtocol("s-video", spec, LimitsConfig(), STATS_EVERY_S, 0.0)
    start = {"type": "start", "audio": {"encoding": "container"}, "video": {"encoding": "container"}, "stats": True}
    protocol.receive_text(json.dumps(start), 0.0)
    protocol.opened(0.0)
    drain(protocol)
    frames = (decoded_frame(0), decoded_frame(16_000))
    actions = protocol.container_video(ContainerVideo(frames, received=10, dropped=1))
    assert [a.chunk for a in actions] == list(frames)
    broken = CodedError(ErrorCode.DECODE_FAILED, "the video track could not be decoded; audio goes on")
    assert protocol.container_video(ContainerVideo((), received=12, dropped=1, error=broken)) == []
    assert protocol.container_video(ContainerVideo((), received=12, dropped=1)) == []
    protocol.tick(STATS_EVERY_S, 0.0, 2)
    events = drain(protocol)
    (error,) = [e for e in events if e["type"] == "error"]
    assert error["code"] == "decode_failed" and not error["fatal"] and protocol.phase is Phase.STREAMING
    (stats,) = [e for e in events if e["type"] == "stats"]
    assert (stats["frames_received"], stats["frames_dropped"]) == (12, 3)  # 1 in the demuxer, 2 in the scheduler


def test_impossible_frame_times_and_rates_are_refused_without_ending_the_session():
    from patchstream.streaming.protocol import ProtocolError, parse_control

    for bad in ('{"type": "frame", "time": 1e305}', '{"type": "frame", "time": -1}'):
        with pytest.raises(ProtocolError):
            parse_control(bad)
    start = {**json.loads(START), "video": {"encoding": "jpeg", "fps": 1e-320}}
    with pytest.raises(ProtocolError):
        parse_control(json.dumps(start))
    # Milliseconds sent by mistake: refused, its image read and dropped (not taken as audio).
    spec = EngineSpec("seer", media=frozenset({MediaKind.AUDIO, MediaKind.VIDEO}), video_fps=1.0)
    protocol = SessionProtocol("s-video", spec, LimitsConfig(), STATS_EVERY_S, 0.0)
    protocol.receive_text(json.dumps({**json.loads(START), "video": {"encoding": "jpeg", "fps": 1}}), 0.0)
    protocol.opened(0.0)
    drain(protocol)
    assert protocol.receive_text(json.dumps({"type": "frame", "time": 12_500}), 0.1) == []
    assert protocol.receive_bytes(b"\xff\xd8 an image", 0.1) == []
    (error,) = drain(protocol)
    assert (error["type"], error["code"], error["fatal"]) == ("error", "bad_message", False)
    assert protocol.phase is Phase.STREAMING
