"""docs/protocol.md and `patchstream.streaming.protocol` name the same messages, events, error
codes and ended reasons — each documented name exists in the module, and the reverse."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from patchstream.streaming.protocol import (
    CONTROL_TYPES,
    EVENT_TYPES,
    FATAL_START_ERRORS,
    EndedReason,
    ErrorCode,
)

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = DOC.index(f"## {title}")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end >= 0 else len(DOC)]


def _headings(section: str) -> set[str]:
    return set(re.findall(r"^### `([a-z_.]+)`", section, flags=re.MULTILINE))


def _error_table() -> dict[str, bool]:
    rows = re.findall(r"^\| `([a-z_]+)` \| (yes|no) \|", _section("Server → client"), flags=re.MULTILINE)
    return {code: fatal == "yes" for code, fatal in rows}


def test_every_event_is_documented_and_every_documented_event_exists():
    assert _headings(_section("Server → client")) == set(EVENT_TYPES)


def test_every_control_message_is_documented_and_the_reverse():
    assert _headings(_section("Client → server")) == set(CONTROL_TYPES)


def test_every_error_code_is_documented_and_the_reverse():
    assert set(_error_table()) == {code.value for code in ErrorCode}


def test_start_errors_the_doc_calls_fatal_are_the_fatal_ones():
    fatal = {code for code, is_fatal in _error_table().items() if is_fatal}
    assert {code.value for code in FATAL_START_ERRORS} <= fatal


def test_every_ended_reason_is_documented_and_the_reverse():
    sentence = re.search(r"`reason` is (.+?)\.", _section("Server → client")).group(1)
    assert set(re.findall(r"`([a-z]+)`", sentence)) == {reason.value for reason in EndedReason}


def test_the_protocol_module_loads_without_the_server_or_native_libraries():
    code = (
        "import sys, patchstream.streaming.protocol\n"
        "heavy = ('av', 'numpy', 'websockets', 'torch', 'patchstream.streaming.session', 'patchstream.streaming.decode')\n"
        "sys.exit(' '.join(m for m in heavy if m in sys.modules) or None)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
