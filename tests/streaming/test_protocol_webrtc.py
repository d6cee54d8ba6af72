"""The wire form of WebRTC sessions: `start` with webrtc media, the signalling messages both
ways, and what is refused."""

from __future__ import annotations

import json

import pytest

from patchstream.streaming.protocol import (
    ErrorCode,
    ProtocolError,
    StartMessage,
    WebRTCAnswer,
    WebRTCCandidate,
    WebRTCOffer,
    control_to_json,
    parse_control,
    parse_event,
    to_json,
)


def test_a_webrtc_start_declares_audio_and_video_tracks():
    start = parse_control(json.dumps({"type": "start", "audio": {"encoding": "webrtc"}, "video": {"encoding": "webrtc"}}))
    assert isinstance(start, StartMessage) and start.audio.is_webrtc and not start.audio.is_raw
    assert start.video.encoding == "webrtc"
    assert parse_control(control_to_json(start)) == start


@pytest.mark.parametrize(
    "audio, video",
    [
        ({"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}, {"encoding": "webrtc"}),
        ({"encoding": "webrtc"}, {"encoding": "jpeg"}),
        ({"encoding": "webrtc", "container": "webm"}, None),
    ],
)
def test_webrtc_media_is_all_or_nothing(audio, video):
    with pytest.raises(ProtocolError) as raised:
        parse_control(json.dumps({"type": "start", "audio": audio, "video": video}))
    assert raised.value.code == ErrorCode.BAD_FORMAT


def test_signalling_messages_round_trip_and_bad_ones_have_codes():
    offer = WebRTCOffer("v=0\r\n")
    candidate = WebRTCCandidate("candidate:1 1 udp 1 192.0.2.7 5000 typ host", sdp_mline_index=0)
    assert parse_control(control_to_json(offer)) == offer
    assert parse_control(control_to_json(candidate)) == candidate
    assert parse_control(control_to_json(WebRTCCandidate(""))) == WebRTCCandidate("")  # end of candidates
    for message, code in [
        ({"type": "webrtc.offer"}, ErrorCode.BAD_OFFER),
        ({"type": "webrtc.offer", "sdp": "x" * 40_000}, ErrorCode.BAD_OFFER),
        ({"type": "webrtc.candidate", "candidate": "candidate:1"}, ErrorCode.BAD_MESSAGE),  # no mid or index
        ({"type": "webrtc.candidate", "candidate": 5, "sdp_mid": "0"}, ErrorCode.BAD_MESSAGE),
    ]:
        with pytest.raises(ProtocolError) as raised:
            parse_control(json.dumps(message))
        assert raised.value.code == code, message


def test_the_answer_is_an_event():
    event = parse_event(to_json(WebRTCAnswer("v=0\r\n")))
    assert event.type == "webrtc.answer" and event.fields["sdp"] == "v=0\r\n"
