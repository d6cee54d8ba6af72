"""Idle timeout and protocol adapters: a client message an adapter answers itself is activity."""

from __future__ import annotations

import json

from patchstream.model.api import EngineSpec
from patchstream.streaming.config import LimitsConfig
from patchstream.streaming.session_protocol import Close, SessionProtocol

MONO = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 1}}


def test_a_message_an_adapter_consumed_itself_keeps_the_session_alive():
    protocol = SessionProtocol("s-test", EngineSpec("fake"), LimitsConfig(idle_timeout_s=60.0), 2.0, 0.0)
    protocol.receive_text(json.dumps(MONO), 0.0)
    protocol.opened(0.0)
    protocol.touch(50.0)  # an AudioHook ping during a pause: no audio, but the client is there
    assert protocol.tick(100.0) == []
    assert isinstance(protocol.tick(111.0)[-1], Close)
