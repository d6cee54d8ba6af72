"""The finals journal: one JSONL file per session, so transcripts outlive sockets and restarts.

It is: an append-only writer and a reader. `<directory>/<session id>.jsonl` holds a header line
(session id, the public id of the key that made it, start time), then one line per final caption
or interpretation as the client received it, then an `ended` line. Files are written on one
thread of their own, in order, never on the event loop.

Fsync policy (`JournalConfig.fsync`): "end" (default) writes and flushes every final to the OS
at once — it survives a crash of the server process — and fsyncs the file when the session ends
and when the server shuts down, so a finished transcript survives a power cut; "every" fsyncs
after each final too (one disk flush per caption).

It is not: a database. Nothing is deleted here (retention is the operator's: the files are
plain JSONL), and readers get whole files (a 4-hour session's finals are a few MB at most).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import IO

from patchstream.streaming.config import JournalConfig
from patchstream.streaming.protocol import CaptionFinal, InterpretationFinal

log = logging.getLogger(__name__)

SESSION_ID = re.compile(r"^s-[0-9a-f]{16}$")  # the only names a journal file may have (no paths)


class TranscriptNotFound(Exception):
    """No journal for that session, or it belongs to another key (the same answer for both, so
    one key cannot learn which sessions exist)."""


class Journal:
    """Appends finals to per-session files; reads finished and live transcripts back."""

    def __init__(self, config: JournalConfig):
        self.config = config
        self.directory = Path(config.directory) if config.directory is not None else None
        self._files: dict[str, IO[str]] = {}  # open journals, touched only on the writer thread
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="journal")

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def _path(self, session_id: str) -> Path:
        if not SESSION_ID.match(session_id):
            raise TranscriptNotFound(session_id)
        return self.directory / f"{session_id}.jsonl"

    def _submit(self, fn, *args) -> None:
        if self.enabled:
            self._writer.submit(self._logged, fn, *args)

    @staticmethod
    def _logged(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a full disk must not end sessions; it is logged
            log.exception("journal write failed")

    # -- writing (each call queues work for the writer thread and returns at once) ---------------

    def open(self, session_id: str, key_id: str) -> None:
        header = {"type": "session", "session_id": session_id, "key_id": key_id, "started": round(time.time(), 3)}
        self._submit(self._open, session_id, json.dumps(header))

    def append(self, session_id: str, final: CaptionFinal | InterpretationFinal) -> None:
        self._submit(self._write, session_id, json.dumps(asdict(final), ensure_ascii=False), self.config.fsync == "every")

    def close(self, session_id: str, reason: str) -> None:
        line = json.dumps({"type": "ended", "reason": str(reason), "ended": round(time.time(), 3)})
        self._submit(self._close, session_id, line)

    async def aclose(self) -> None:
        """Flush and fsync every open journal, then stop the writer (server shutdown)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._sync_all)
        self._writer.shutdown(wait=True)

    def _open(self, session_id: str, header: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        file = open(self._path(session_id), "a", encoding="utf-8")  # noqa: SIM115 - held until close
        self._files[session_id] = file
        file.write(header + "\n")
        file.flush()

    def _write(self, session_id: str, line: str, sync: bool) -> None:
        file = self._files.get(session_id)
        if file is None:
            return
        file.write(line + "\n")
        file.flush()
        if sync:
            os.fsync(file.fileno())

    def _close(self, session_id: str, line: str) -> None:
        file = self._files.pop(session_id, None)
        if file is None:
            return
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())
        file.close()

    def _sync_all(self) -> None:
        for file in self._files.values():
            file.flush()
            os.fsync(file.fileno())

    # -- reading ---------------------------------------------------------------------------------

    async def read(self, session_id: str, key_id: str) -> dict:
        """The transcript of a session made with `key_id`: its finals, and whether it has ended.
        TranscriptNotFound when there is none for that key."""
        if not self.enabled:
            raise TranscriptNotFound(session_id)
        # On the writer thread: it sees every final queued before the request, in order.
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._read, session_id, key_id)

    def _read(self, session_id: str, key_id: str) -> dict:
        try:
            lines = self._path(session_id).read_text(encoding="utf-8").splitlines()
        except OSError:
            raise TranscriptNotFound(session_id) from None
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash ends what can be trusted
        if not records or records[0].get("type") != "session" or records[0].get("key_id") != key_id:
            raise TranscriptNotFound(session_id)
        finals = [r for r in records[1:] if r.get("type") in ("caption.final", "interpretation.final")]
        ended = next((r for r in records if r.get("type") == "ended"), None)
        captions = [r["text"] for r in finals if r["type"] == "caption.final"]
        return {
            "session_id": session_id,
            "status": "ended" if ended else "live",  # "live": streaming, or cut off by a server crash
            "ended_reason": ended["reason"] if ended else None,
            "text": " ".join(captions),
            "finals": finals,
        }
