"""Test doubles for fault tests: a TCP proxy whose connections can be cut, and engines that fail
or cost a known amount of model time. Not a test module itself."""

from __future__ import annotations

import asyncio
import time
from typing import Sequence

from patchstream.model.api import EngineChoice, SessionOptions, StepResult
from patchstream.model.engines import build_engine


class CuttableProxy:
    """Forwards TCP between clients and a server; `cut()` aborts every live connection at once,
    as a phone losing its network does (no close frame, no FIN to wait for)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> "CuttableProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.cut()
        self._server.close()

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    def url(self, path: str = "/v1/stream") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


class FailingEngine:
    """The fake engine, except that a session opened with prompt "explode" fails in `step`."""

    def __init__(self):
        self._inner = build_engine(EngineChoice("fake"))
        self.spec = self._inner.spec
        self._doomed: set[int] = set()

    def open(self, options: SessionOptions):
        state = self._inner.open(options)
        if options.prompt == "explode":
            self._doomed.add(id(state))
        return state

    def step(self, states: Sequence) -> list[StepResult]:
        if any(id(state) in self._doomed for state in states):
            raise RuntimeError("engine fault injected for this session")
        return self._inner.step(states)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class CostlyEngine:
    """The fake engine whose steps take `cost` model seconds per second of audio (a sleep on the
    model thread), so the capacity model measures a known real-time factor."""

    def __init__(self, cost: float):
        self._inner = build_engine(EngineChoice("fake"))
        self.spec = self._inner.spec
        self.cost = cost
        self._fed: dict[int, int] = {}

    def feed(self, state, media) -> None:
        self._fed[id(state)] = self._fed.get(id(state), 0) + len(getattr(media, "samples", ()))
        self._inner.feed(state, media)

    def step(self, states: Sequence) -> list[StepResult]:
        samples = sum(self._fed.pop(id(state), 0) for state in states)
        time.sleep(self.cost * samples / 16_000)
        return self._inner.step(states)

    def __getattr__(self, name):
        return getattr(self._inner, name)
