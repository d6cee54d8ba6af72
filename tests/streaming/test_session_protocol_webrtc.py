"""The session state machine's WebRTC rules, on a fake clock: signalling order, the answer, the
media timeout, a lost peer, and what a WebRTC session refuses."""

from __future__ import annotations

import json

from patchstream.model.api import EngineSpec
from patchstream.streaming.config import LimitsConfig
from patchstream.streaming.protocol import CodedError, ErrorCode, WebRTCCandidate, WebRTCOffer, control_to_json
from patchstream.streaming.session_protocol import Close, FinishMedia, Open, Phase, SessionProtocol, Signal

WEBRTC_START = json.dumps({"type": "start", "audio": {"encoding": "webrtc"}})
PCM_START = json.dumps({"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 1}})
OFFER = control_to_json(WebRTCOffer("v=0\r\n"))
CANDIDATE = control_to_json(WebRTCCandidate("candidate:1 1 udp 1 192.0.2.7 5000 typ host", sdp_mid="0"))
LIMITS = LimitsConfig(idle_timeout_s=60.0, peer_media_timeout_s=3.0)


def drain(protocol: SessionProtocol) -> list[dict]:
    events = []
    while (event := protocol.next_event()) is not None:
        events.append(dict(vars(event)))
    return events


def started(start: str = WEBRTC_START) -> SessionProtocol:
    protocol = SessionProtocol("s-test", EngineSpec("fake"), LIMITS, 2.0, 0.0)
    assert [type(a) for a in protocol.receive_text(start, 0.0)] == [Open]
    protocol.opened(0.0)
    assert [e["type"] for e in drain(protocol)] == ["ready"]
    return protocol


def test_signalling_before_start_is_not_started():
    protocol = SessionProtocol("s-test", EngineSpec("fake"), LIMITS, 2.0, 0.0)
    assert protocol.receive_text(OFFER, 0.0) == []
    assert [(e["code"], e["fatal"]) for e in drain(protocol)] == [("not_started", False)]


def test_the_offer_goes_to_the_peer_and_the_answer_to_the_client():
    protocol = started()
    (signal,) = protocol.receive_text(OFFER, 1.0)
    assert isinstance(signal, Signal) and signal.message == WebRTCOffer("v=0\r\n")
    assert protocol.answered("v=0 answer", 1.2) == []
    assert drain(protocol) == [{"sdp": "v=0 answer", "type": "webrtc.answer"}]
    (signal,) = protocol.receive_text(CANDIDATE, 1.3)
    assert signal.message.sdp_mid == "0"


def test_a_second_offer_and_an_early_candidate_are_refused_without_ending():
    protocol = started()
    assert protocol.receive_text(CANDIDATE, 0.5) == []  # before any offer
    protocol.receive_text(OFFER, 1.0)
    assert protocol.receive_text(OFFER, 1.1) == []
    assert [(e["code"], e["fatal"]) for e in drain(protocol)] == [("bad_message", False), ("bad_offer", False)]
    assert protocol.phase is Phase.STREAMING


def test_signalling_in_a_websocket_session_and_bytes_in_a_webrtc_session_are_refused():
    protocol = started(PCM_START)
    assert protocol.receive_text(OFFER, 1.0) == []
    assert [e["code"] for e in drain(protocol)] == ["bad_message"]
    protocol = started()
    assert protocol.receive_bytes(b"\x00" * 64, 1.0) == []
    assert [(e["code"], e["fatal"]) for e in drain(protocol)] == [("bad_message", False)]


def test_an_offer_that_cannot_be_answered_ends_the_session_and_a_bad_candidate_does_not():
    protocol = started()
    protocol.receive_text(OFFER, 1.0)
    assert protocol.signal_failed(CodedError(ErrorCode.BAD_MESSAGE, "not a candidate line")) == []
    assert protocol.phase is Phase.STREAMING
    assert protocol.signal_failed(CodedError(ErrorCode.UNSUPPORTED_CODEC, "no Opus")) == [Close()]
    events = drain(protocol)
    assert [(e["type"], e.get("code"), e.get("fatal")) for e in events] == [
        ("error", "bad_message", False), ("error", "unsupported_codec", True), ("ended", None, None)
    ]
    assert events[-1]["reason"] == "error"


def test_no_media_for_the_timeout_after_the_answer_is_peer_lost():
    protocol = started(json.dumps({"type": "start", "audio": {"encoding": "webrtc"}, "stats": False}))
    protocol.receive_text(OFFER, 1.0)
    assert protocol.next_deadline() == 61.0  # before the answer only the idle timeout counts
    protocol.answered("answer", 1.0)
    assert protocol.next_deadline() == 4.0  # the answer + 3 s
    protocol.peer_media(3.5)  # media arrived: the peer is alive
    assert protocol.next_deadline() == 6.5
    assert protocol.tick(6.0) == [] and protocol.phase is Phase.STREAMING
    assert protocol.tick(6.5) == [Close()]
    errors = [e for e in drain(protocol) if e["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [("peer_lost", True)]
    assert "3 s" in errors[0]["message"]


def test_a_lost_peer_ends_a_streaming_session_but_not_one_that_is_finishing():
    protocol = started()
    assert protocol.peer_lost("the WebRTC connection failed") == [Close()]
    assert [e["code"] for e in drain(protocol) if e["type"] == "error"] == ["peer_lost"]
    protocol = started()
    assert protocol.receive_text(json.dumps({"type": "stop"}), 1.0) == [FinishMedia()]
    assert protocol.peer_lost("the peer's audio track ended") == []  # the client closed after `stop`
    assert protocol.phase is Phase.FINISHING
