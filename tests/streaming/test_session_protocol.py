"""The sans-I/O session state machine, driven message by message on a fake clock."""

from __future__ import annotations

import json

import numpy as np
import pytest

from patchstream.model.api import AudioChunk, CaptionUpdate, EngineSpec, InterpretationUpdate, MediaKind, StepResult, Word
from patchstream.streaming.config import LimitsConfig
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
        events.append({key: value for key, value in vars(event).items() if value is not None})  # None: not sent
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


def test_images_not_due_at_the_engines_rate_are_never_decoded_and_the_header_is_checked_first():
    spec = EngineSpec("seer", media=frozenset({MediaKind.AUDIO, MediaKind.VIDEO}), video_fps=1.0, interpretations=frozenset({"text"}))
    protocol = SessionProtocol("s-video", spec, LimitsConfig(), STATS_EVERY_S, 0.0)
    start = {**json.loads(START), "video": {"encoding": "jpeg", "fps": 4}, "interpretations": ["text"]}
    (open_,) = protocol.receive_text(json.dumps(start), 0.0)
    assert open_.options.interpretations == {"text"}
    protocol.opened(0.0)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + (640).to_bytes(4, "big") + (360).to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    decoded = []
    for quarter in range(8):  # 4 fps sent, 1 fps wanted
        assert protocol.receive_text(json.dumps({"type": "frame", "time": quarter / 4}), 0.1) == []
        decoded += protocol.receive_bytes(png, 0.1)
    assert [type(a) for a in decoded] == [DecodeFrame, DecodeFrame]
    assert [a.start_sample for a in decoded] == [0, 16_000] and decoded[0].info.width == 640
    assert drain(protocol)[1:] == []  # sampling is not an error


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
