"""Process entry points: build the engine, run the server on uvloop, stop cleanly on signals.

`run` is what `patchstream serve` calls; `serve_in_process` is what the CLI client and the
benchmarks use to get a private server inside their own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import AsyncIterator

from patchstream.model.api import EngineChoice
from patchstream.model.engines import build_engine
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.server import Server

log = logging.getLogger(__name__)


def new_event_loop() -> asyncio.AbstractEventLoop:
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
        await stop.wait()
        log.info("shutting down: %d live sessions get %.0f s to flush", server.active_sessions, config.shutdown_grace_s)


def run(config: ServerConfig, engine_choice: EngineChoice) -> None:
    """Blocking: serve until SIGINT/SIGTERM, then shut down gracefully."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(_serve(config, engine_choice))
