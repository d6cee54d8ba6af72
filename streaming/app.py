"""Process entry points: build the engine, run the server on uvloop, stop cleanly on signals.

It is the server's public face for launchers, and the only server module `clients/cli.py` may
import: `run` is what `patchstream serve` calls; `serve_in_process` is what the CLI client and
the benchmarks use to get a private server inside their own event loop; `run_until_complete` is
the one uvloop runner of the project; and it names what a launcher configures (`ServerConfig`,
`LimitsConfig`, `EngineChoice`, `ENGINE_NAMES`, `ENGINE_OPTIONS` (engine knobs a launcher may set),
`BUNDLED_MODELS`, `VISION_PARTS`, `EngineError`, and `load_assist_file` for `--assist-config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import AsyncIterator, Coroutine, TypeVar

from patchstream.model.api import EngineChoice, EngineError
from patchstream.model.engines import BUNDLED_MODELS, ENGINE_OPTIONS, ENGINES, VISION_PARTS, build_engine
from patchstream.streaming.admission import AdmissionConfig
from patchstream.streaming.assist.config import load_assist_file
from patchstream.streaming.auth import ApiKey, AuthConfig, load_keys_file, mint_token, parse_key
from patchstream.streaming.config import JournalConfig, LimitsConfig, ServerConfig
from patchstream.streaming.logging_context import configure_logging
from patchstream.streaming.server import Server

__all__ = [
    "BUNDLED_MODELS", "ENGINE_NAMES", "ENGINE_OPTIONS", "VISION_PARTS", "EngineChoice", "EngineError",
    "LimitsConfig", "ServerConfig", "load_assist_file", "run", "run_until_complete", "serve_in_process",
    # issue 13: what `serve` configures for auth, capacity, the journal and logs
    "AdmissionConfig", "ApiKey", "AuthConfig", "JournalConfig", "configure_logging", "load_keys_file", "mint_token", "parse_key",
]

ENGINE_NAMES = tuple(sorted(ENGINES))  # what `--engine` accepts
T = TypeVar("T")

log = logging.getLogger(__name__)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed, the standard loop otherwise."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@contextlib.asynccontextmanager
async def serve_in_process(config: ServerConfig, engine_choice: EngineChoice) -> AsyncIterator[Server]:
    """Build the engine (off the loop: loading weights blocks) and yield a started server."""
    engine = await asyncio.get_running_loop().run_in_executor(None, build_engine, engine_choice)
    async with Server(config, engine) as server:
        yield server


async def _serve(config: ServerConfig, engine_choice: EngineChoice) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with serve_in_process(config, engine_choice) as server:
        print(f"patchstream: serving {server.engine.spec.name} on {server.url}", flush=True)
        if config.web_dir:
            print(f"patchstream: the browser page is at {server.page_url}", flush=True)
        await stop.wait()
        log.info("shutting down: %d live sessions get %.0f s to flush", server.active_sessions, config.shutdown_grace_s)


def run_until_complete(main: Coroutine[None, None, T]) -> T:
    """Blocking: run a coroutine to its end on a fresh uvloop (asyncio's loop without uvloop)."""
    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        return runner.run(main)


def run(config: ServerConfig, engine_choice: EngineChoice) -> None:
    """Blocking: serve until SIGINT/SIGTERM, then shut down gracefully."""
    run_until_complete(_serve(config, engine_choice))
