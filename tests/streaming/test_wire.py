"""Client control messages parse into typed messages or clear protocol errors."""

import json

import pytest

from patchstream.streaming.protocol import ProtocolError, StartMessage, StopMessage, parse_control


def start(**audio):
    return json.dumps({"type": "start", "audio": audio})


def test_start_with_raw_pcm():
    message = parse_control(start(encoding="pcm_s16le", sample_rate=8000, channels=2))
    assert isinstance(message, StartMessage)
    assert (message.audio.encoding, message.audio.sample_rate, message.audio.channels) == ("pcm_s16le", 8000, 2)
    assert message.language == "en" and message.interim_results


def test_start_with_container_needs_no_rate():
    message = parse_control(start(encoding="container", container="ogg"))
    assert message.audio.encoding == "container"


def test_stop():
    assert isinstance(parse_control('{"type": "stop"}'), StopMessage)


@pytest.mark.parametrize(
    "text, code",
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"type": "dance"}', "unknown_message"),
        (start(encoding="flac9000", sample_rate=16000, channels=1), "unsupported_encoding"),
        (start(encoding="pcm_s16le", channels=1), "bad_format"),
        (start(encoding="pcm_s16le", sample_rate=16000, channels=0), "bad_format"),
        (start(encoding="pcm_s16le", sample_rate="fast", channels=1), "bad_start"),
        ('{"type": "start"}', "bad_start"),
        (json.dumps({"type": "start", "audio": {"encoding": "mulaw", "sample_rate": 8000, "channels": 1},
                     "task": "translate"}), "unsupported_task"),
    ],
)
def test_bad_messages_get_clear_codes(text, code):
    with pytest.raises(ProtocolError) as error:
        parse_control(text)
    assert error.value.code == code
    assert error.value.message
