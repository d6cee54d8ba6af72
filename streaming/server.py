"""The websocket server: routes, session admission, start-up and graceful shutdown.

`Server` is an async context manager. Entering it warms the engine up and then starts listening
on `/v1/stream` (plus `GET /healthz`); leaving it stops accepting, asks every live session to
flush its finals, waits a grace period, then cancels what is left. State lives on the instance.
"""

from __future__ import annotations

import asyncio
import http
import logging
import secrets
import ssl
from concurrent.futures import ThreadPoolExecutor

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from patchstream.model.api import Engine, EngineError, TextModels
from patchstream.model.engines import build_text_models
from patchstream.streaming.adapters.routes import RouteError, adapter_for
from patchstream.streaming.assist.service import ASSIST_THREADS, AssistService
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.protocol import HEALTH_PATH, NATIVE_STREAM_PATH, Ended, EndedReason, Error, ErrorCode, to_json
from patchstream.streaming.scheduler import Scheduler
from patchstream.streaming.session import Session, SessionContext
from patchstream.streaming.static_files import StaticFiles

log = logging.getLogger(__name__)


class Server:
    """Serves the native protocol for one engine."""

    def __init__(self, config: ServerConfig, engine: Engine, text_models: TextModels | None = None):
        self.config = config
        self.engine = engine
        self._text_models = text_models  # agent assist's models; None: loaded at start-up
        self.scheduler = Scheduler(engine, config.scheduler)
        self._decode_executor = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="decode")
        self._assist_executor = ThreadPoolExecutor(ASSIST_THREADS, thread_name_prefix="assist")
        self._assist: AssistService | None = None  # built with its text models at start-up
        self._sessions: dict[str, Session] = {}
        self._session_tasks: set[asyncio.Task] = set()
        self._ws_server = None
        self._ready = False
        self._web = StaticFiles(config.web_dir) if config.web_dir else None  # read once, here
        self._ssl = _ssl_context(config.certfile, config.keyfile) if config.certfile else None

    @property
    def port(self) -> int:
        return self._ws_server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"{'wss' if self._ssl else 'ws'}://{host}:{self.port}{NATIVE_STREAM_PATH}"

    @property
    def page_url(self) -> str:
        """Where a browser opens the page (served when the config names a `web_dir`)."""
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"{'https' if self._ssl else 'http'}://{host}:{self.port}/"

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    async def __aenter__(self) -> "Server":
        await self.scheduler.start()
        await self.scheduler.warm_up()
        models = self._text_models or await asyncio.get_running_loop().run_in_executor(
            self._assist_executor, build_text_models
        )
        try:
            self._assist = AssistService(self.config.assist, models, self._assist_executor)
        except ValueError as error:  # `--assist-config` asks for a model the `assist` extra would bring
            raise EngineError(str(error)) from None
        limits = self.config.limits
        self._ws_server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            max_size=limits.max_message_bytes,
            max_queue=1,  # frames buffered by the library before TCP backpressure applies
            ping_interval=20,
            ping_timeout=20,
            ssl=self._ssl,
        )
        self._ready = True
        log.info("patchstream listening on %s (engine %s)", self.url, self.engine.spec.name)
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, let sessions flush for the grace period, then cancel the rest."""
        if self._ws_server is None:
            return
        self._ready = False
        self._ws_server.close(close_connections=False)
        for session in list(self._sessions.values()):
            session.request_shutdown()
        if self._session_tasks:
            _, pending = await asyncio.wait(self._session_tasks, timeout=self.config.shutdown_grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._ws_server.wait_closed()
        self._ws_server = None
        await self.scheduler.stop()
        self._decode_executor.shutdown(wait=False, cancel_futures=True)
        self._assist_executor.shutdown(wait=False, cancel_futures=True)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == HEALTH_PATH:
            if self._ready and self.scheduler.running:
                return connection.respond(http.HTTPStatus.OK, "ok\n")
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "warming up\n")
        if self._web is not None and (page := self._web.respond(path)) is not None:
            return page  # the browser page; its paths never shadow a stream endpoint (static_files.py)
        try:
            adapter_for(request.path)  # the native protocol, or a foreign one's adapter (adapters/routes.py)
        except RouteError as error:
            return connection.respond(error.status, f"{error.message}\n")
        return None

    async def _handle(self, websocket: ServerConnection) -> None:
        if len(self._sessions) >= self.config.limits.max_sessions or not self._ready:
            if self._ready:
                busy = f"server has {len(self._sessions)} sessions, its limit; try again later"
                error = Error(ErrorCode.SERVER_BUSY, busy, True)
            else:
                error = Error(ErrorCode.SHUTTING_DOWN, "the server is shutting down", True)
            await websocket.send(to_json(error))
            await websocket.send(to_json(Ended(EndedReason.ERROR)))  # never admitted: no session ended
            await websocket.close()
            return
        session_id = f"s-{secrets.token_hex(4)}"
        context = SessionContext(
            session_id=session_id,
            scheduler=self.scheduler,
            decode_executor=self._decode_executor,
            limits=self.config.limits,
            scheduler_config=self.config.scheduler,
            engine_spec=self.engine.spec,
            assist=self._assist,
        )
        session = Session(websocket, context, adapter_for(websocket.request.path))
        self._sessions[session_id] = session
        task = asyncio.current_task()
        self._session_tasks.add(task)
        log.info("session %s opened from %s", session_id, websocket.remote_address)
        try:
            await session.run()
        finally:
            self._sessions.pop(session_id, None)
            self._session_tasks.discard(task)
            log.info("session %s closed", session_id)


def _ssl_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    """TLS for https:// and wss:// (browsers give microphones only to secure pages, or localhost)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return context
