"""Structured logs: every record carries the session (and key) it concerns, and no credential.

It is: a context variable holding the current session id and key id (set once where a session's
tasks are created; asyncio copies the context into every task made after that, so each of its
log records knows its session without passing ids around), a filter that stamps records with
them, a JSON formatter for `patchstream serve --log-format json`, and `RedactingLogger`, which the
server gives the websockets library so its handshake debug lines never show a token.

It is not: where anything is logged, and not metrics (`metrics.py`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from dataclasses import dataclass

from patchstream.streaming.auth import redact


@dataclass(frozen=True)
class LogContext:
    session_id: str = "-"  # the session a record concerns; "-" outside sessions
    key_id: str = "-"  # the API key's public id (never its secret)


_CONTEXT: contextvars.ContextVar[LogContext] = contextvars.ContextVar("patchstream_log_context", default=LogContext())


def bind(session_id: str, key_id: str) -> None:
    """Mark the current task (and every task it creates from now on) as this session's."""
    _CONTEXT.set(LogContext(session_id, key_id))


def current() -> LogContext:
    return _CONTEXT.get()


class ContextFilter(logging.Filter):
    """Adds `session_id` and `key_id` to every record, and redacts its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _CONTEXT.get()
        record.session_id = getattr(record, "session_id", context.session_id)
        record.key_id = getattr(record, "key_id", context.key_id)
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, session_id, key_id, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "session_id": getattr(record, "session_id", "-"),
            "key_id": getattr(record, "key_id", "-"),
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(session_id)s %(key_id)s]: %(message)s"


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """The process's logging for `patchstream serve`: one stderr handler, context and redaction.
    Like `logging.basicConfig`, it leaves a root logger that already has handlers alone (a host
    process, or pytest, configured it)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())


class RedactingLogger(logging.LoggerAdapter):
    """A logger for the websockets library: formats each message and redacts it before logging,
    so request lines and headers at debug level show no token, key or resume token."""

    def __init__(self, logger: logging.Logger):
        super().__init__(logger, {})

    def log(self, level, msg, *args, **kwargs) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join(map(str, (msg, *args)))
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, redact(text), **kwargs)
