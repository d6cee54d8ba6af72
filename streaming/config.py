"""Frozen configuration of the server: network, limits, scheduling.

Built once from CLI flags (`clients/cli.py`) or by tests; never read from globals or the
environment inside the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from patchstream.streaming.admission import AdmissionConfig
from patchstream.streaming.auth import AuthConfig

from patchstream.streaming.assist.config import AssistConfig


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds that keep one client from hurting the server or other sessions."""

    max_sessions: int = 16  # concurrent sessions; the next one gets `server_busy`
    max_frame_bytes: int = 1 << 20  # one binary audio frame (1 MiB); larger frames are rejected
    max_image_bytes: int = 8 << 20  # one JPEG/PNG video frame (8 MiB); larger ones are rejected undecoded
    max_image_pixels: int = 7680 * 4320  # pixels an image header may declare (8K); more is a bomb, refused
    max_queued_image_bytes: int = 16 << 20  # images waiting for decode; beyond it the oldest waiting go (latest wins)
    max_message_bytes: int = 64 << 20  # websocket hard limit; beyond it the connection closes 1009
    max_backlog_s: float = 30.0  # audio waiting for the model; the oldest is dropped beyond it
    max_pending_finals: int = 2_000  # finals queued for a client that does not read; then close
    start_timeout_s: float = 10.0  # time allowed between connect and the `start` message
    idle_timeout_s: float = 60.0  # no audio and no control message for this long ends the session
    send_timeout_s: float = 20.0  # one send blocked this long means the client stopped reading
    max_session_s: float = 4 * 3600.0  # media seconds one session may stream
    peer_media_timeout_s: float = 10.0  # WebRTC: no media this long after the answer ends the session (`peer_lost`)


@dataclass(frozen=True)
class SchedulerConfig:
    """How model work is shared between sessions."""

    stats_interval_s: float = 2.0  # period of `stats` events to each client


@dataclass(frozen=True)
class ServerConfig:
    """Everything `patchstream.streaming.server.Server` needs besides its engine."""

    host: str = "127.0.0.1"  # address to bind; "0.0.0.0" to serve other machines
    port: int = 8765  # TCP port; 0 picks a free one (tests)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    shutdown_grace_s: float = 5.0  # on shutdown, time sessions get to flush their finals
    decode_threads: int = 2  # worker threads for PyAV decoding (kept off the event loop)
    web_dir: str | None = None  # the browser page's directory, served at GET /; None: no page
    certfile: str | None = None  # TLS certificate chain (PEM): serve https:// and wss://; None: plain
    keyfile: str | None = None  # its private key (PEM); None: inside `certfile`
    assist: AssistConfig = field(default_factory=AssistConfig)  # agent assist every session gets (`--assist-config`)
    # --- issue 13: auth, TLS, capacity, resume, journal (docs/operations.md) ---
    auth: AuthConfig = field(default_factory=AuthConfig)  # keys, tokens, origins; no keys = open on loopback
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)  # capacity from measured headroom
    resume_grace_s: float = 30.0  # a dropped session waits this long for its client to resume; 0 = no resume
    journal: JournalConfig = field(default_factory=lambda: JournalConfig())  # finals on disk


@dataclass(frozen=True)
class JournalConfig:
    """Where finals are journaled (one JSONL file per session) and how durably."""

    directory: Path | None = None  # None: no journal (finished transcripts are not kept)
    # "end": each final is written and flushed to the OS at once (it survives a server crash) and
    # the file is fsynced when the session ends (it survives a power cut from then on);
    # "every": fsync after every final (durable at once, one disk flush per caption).
    fsync: str = "end"
