"""The websocket server: routes, session admission, start-up and graceful shutdown.

`Server` is an async context manager. Entering it warms the engine up and then starts listening
on `/v1/stream` (plus `GET /healthz`); leaving it stops accepting, asks every live session to
flush its finals, waits a grace period, then cancels what is left. State lives on the instance.

Every request passes `authorize` (auth.py: keys, tokens, origins) before anything else; the
HTTP endpoints (readiness, metrics, transcripts) live in `endpoints.py`, admission by capacity
in `admission.py`, the journal in `journal.py`, metrics in `metrics.py` (issue 13).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import logging
import secrets
import ssl
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from patchstream.model.api import Engine, EngineError, TextModels
from patchstream.model.engines import build_text_models
from patchstream.streaming import endpoints, logging_context
from patchstream.streaming.admission import CapacityModel, KeyUsage
from patchstream.streaming.auth import AuthError, AuthRequest, Authenticator, Principal, check_bind
from patchstream.streaming.adapters.routes import RouteError, adapter_for
from patchstream.streaming.assist.service import ASSIST_THREADS, AssistService
from patchstream.streaming.config import ServerConfig
from patchstream.streaming.journal import Journal
from patchstream.streaming.metrics import ServerMetrics
from patchstream.streaming.protocol import (
    NATIVE_STREAM_PATH,
    TRANSCRIPT_PATH,
    CodedError,
    Ended,
    EndedReason,
    Error,
    ErrorCode,
    ProtocolError,
    to_json,
)
from patchstream.streaming.scheduler import Scheduler
from patchstream.streaming.session import Session, SessionContext
from patchstream.streaming.session_observer import SessionObserver
from patchstream.streaming.static_files import StaticFiles

log = logging.getLogger(__name__)

WARM_UP_S = 2.0  # audio of the warm-up session; its step time is the first cost estimate


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
        # issue 13: auth, capacity, per-key usage, journal, metrics, resume
        self.auth = Authenticator(config.auth)
        self.capacity = CapacityModel(config.admission)
        self.usage = KeyUsage()
        self.journal = Journal(config.journal)
        self.metrics = ServerMetrics()
        self._streams = 0  # sessions admitted at `start` and not yet closed
        self._owners: dict[str, Principal] = {}  # session id → the key that made it
        self._principals: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection → principal
        self.scheduler.step_observers.append(self._observe_step)
        self.metrics.bind(self.max_backlog_s, self._utilisation, self._capacity_streams)
        self.metrics.sessions_detached.set_function(lambda: sum(s.protocol.detached for s in list(self._sessions.values())))

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
    def ready(self) -> bool:
        """Warm, scheduling and not shutting down (`/healthz`)."""
        return self._ready and self.scheduler.running

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    async def __aenter__(self) -> "Server":
        check_bind(self.config.auth, self.config.host)
        await self.scheduler.start()
        started = time.perf_counter()
        await self.scheduler.warm_up(WARM_UP_S)
        self.capacity.warmed_up(time.perf_counter() - started, WARM_UP_S)
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
            logger=logging_context.RedactingLogger(logging.getLogger("websockets.server")),
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
        await self.journal.aclose()  # every journal flushed and fsynced

    # -- requests --------------------------------------------------------------------------------

    def authorize(self, connection: ServerConnection, request: Request) -> Principal | Response:
        """The one credential check of every endpoint: the principal, or the refusal to send."""
        try:
            return self.auth.check(AuthRequest(request.path, request.headers, time.time()))
        except AuthError as error:
            self.metrics.errors.labels(code=error.code).inc()
            log.info("refused %s: %s", urlsplit(request.path).path, error.message)
            body = {"type": "error", "code": error.code, "message": error.message, "fatal": True}
            return endpoints.json_response(connection, error.status, body)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path in endpoints.OPEN_PATHS:  # probes: no credential, nothing secret
            return endpoints.probe(self, connection, path)
        if self._web is not None and (page := self._web.respond(path)) is not None:
            # The page's files hold no secret (a browser fetches them without credentials); every
            # stream the page opens passes the check below.
            return page  # its paths never shadow a stream endpoint (static_files.py)
        principal = self.authorize(connection, request)
        if isinstance(principal, Response):
            return principal
        if path in endpoints.AUTHORIZED_PATHS or path.startswith(TRANSCRIPT_PATH):
            return await endpoints.authorized(self, connection, path, principal)
        try:
            adapter_for(request.path)  # the native protocol, or a foreign one's adapter (adapters/routes.py)
        except RouteError as error:
            return connection.respond(error.status, f"{error.message}\n")
        self._principals[connection] = principal
        return None

    async def _handle(self, websocket: ServerConnection) -> None:
        principal = self._principals.pop(websocket, None) or self.auth.check(AuthRequest(websocket.request.path))
        query = parse_qs(urlsplit(websocket.request.path).query)
        if "resume" in query:
            await self._resume(websocket, principal, query)
            return
        if len(self._sessions) >= self.config.limits.max_sessions or not self._ready:
            if self._ready:
                busy = f"server has {len(self._sessions)} sessions, its limit; try again later"
                error = Error(ErrorCode.SERVER_BUSY, busy, True, retry_after_s=self.config.admission.retry_after_s)
            else:
                error = Error(ErrorCode.SHUTTING_DOWN, "the server is shutting down", True)
            await self._refuse(websocket, error)
            return
        session_id = f"s-{secrets.token_hex(8)}"
        logging_context.bind(session_id, principal.key_id)  # this task and every session task log it
        limits = self.config.limits
        allowance = self.usage.remaining_s(principal)
        if allowance is not None:
            limits = dataclasses.replace(limits, max_session_s=min(limits.max_session_s, max(allowance, 1e-3)))
        grace = self.config.resume_grace_s
        adapter = adapter_for(websocket.request.path)  # None: the native protocol
        context = SessionContext(
            session_id=session_id,
            scheduler=self.scheduler,
            decode_executor=self._decode_executor,
            limits=limits,
            scheduler_config=self.config.scheduler,
            engine_spec=self.engine.spec,
            admit=functools.partial(self._admit, session_id, principal),
            observer=SessionObserver(session_id, self.metrics, self.journal, self.engine.spec.sample_rate),
            resume_token=secrets.token_urlsafe(24) if grace > 0 and adapter is None else None,  # native only
            resume_grace_s=grace,
            assist=self._assist,
        )
        session = Session(websocket, context, adapter)
        self._sessions[session_id] = session
        task = asyncio.current_task()
        self._session_tasks.add(task)
        self.metrics.sessions_active.inc()
        log.info("session %s opened from %s", session_id, websocket.remote_address)
        try:
            await session.run()
        finally:
            self._sessions.pop(session_id, None)
            self._session_tasks.discard(task)
            self.metrics.sessions_active.dec()
            if self._owners.pop(session_id, None) is not None:  # it was admitted
                self._streams -= 1
                self.usage.closed(principal, session.protocol.received_s)
                self.journal.close(session_id, session.protocol.ended_reason)
            log.info("session %s closed", session_id)

    def _admit(self, session_id: str, principal: Principal) -> CodedError | None:
        """At `start`: the key's quota, then the model's headroom; an admitted session is counted."""
        refusal = self.usage.refusal(principal) or self.capacity.decide(self._streams, self.max_backlog_s(), time.monotonic())
        if refusal is not None:
            self.metrics.sessions.labels(outcome="refused").inc()
            log.info("session %s refused: %s", session_id, refusal.message)
            return CodedError(refusal.code, refusal.message, refusal.retry_after_s)
        self.usage.opened(principal)
        self._streams += 1
        self._owners[session_id] = principal
        self.journal.open(session_id, principal.key_id)
        self.metrics.sessions.labels(outcome="admitted").inc()
        return None

    async def _resume(self, websocket: ServerConnection, principal: Principal, query: dict) -> None:
        """Attach a reconnecting client to its detached session, or refuse with `resume_failed`."""
        session_id = query["resume"][0]
        token = query.get("resume_token", [""])[0]
        session = self._sessions.get(session_id)
        owner = self._owners.get(session_id)
        expected = session.ctx.resume_token if session is not None else None
        # One answer for every failure, so a guesser learns nothing about which sessions exist.
        if (
            session is None or owner is None or expected is None or owner.key_id != principal.key_id
            or not hmac.compare_digest(expected.encode(), token.encode())
        ):
            await self._refuse(websocket, Error(ErrorCode.RESUME_FAILED, "no session to resume with that id and token", True))
            return
        logging_context.bind(session_id, principal.key_id)
        try:
            finals_received = int(query.get("finals_received", ["0"])[0])
            done = await session.attach(websocket, finals_received)
        except (ValueError, ProtocolError) as error:
            message = error.message if isinstance(error, ProtocolError) else "finals_received must be an integer"
            await self._refuse(websocket, Error(ErrorCode.RESUME_FAILED, message, True))
            return
        self.metrics.resumes.inc()
        log.info("session %s resumed from %s", session_id, websocket.remote_address)
        await done.wait()

    @staticmethod
    async def _refuse(websocket: ServerConnection, error: Error) -> None:
        await websocket.send(to_json(error))
        await websocket.send(to_json(Ended(EndedReason.ERROR)))  # never admitted: no session ended
        await websocket.close()

    # -- capacity and TLS -------------------------------------------------------------------------

    def _observe_step(self, busy_s: float, audio_s: float) -> None:
        self.capacity.observe_step(busy_s, audio_s, time.monotonic())  # the capacity model's clock
        self.metrics.step_seconds.observe(busy_s)

    def max_backlog_s(self) -> float:
        """The longest audio backlog waiting for the model (the scheduler's lag)."""
        return max((slot.backlog_s for slot in list(self.scheduler._slots.values())), default=0.0)

    def _utilisation(self) -> float:
        return self.capacity.utilisation(time.monotonic())

    def _capacity_streams(self) -> float:
        return self.capacity.capacity(time.monotonic())

    def admits(self) -> bool:
        """Would a new session be admitted now? (`/readyz`)"""
        if not self.ready or len(self._sessions) >= self.config.limits.max_sessions:
            return False
        return self.capacity.decide(self._streams, self.max_backlog_s(), time.monotonic()) is None


def _ssl_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    """TLS for https:// and wss:// (browsers give microphones only to secure pages, or localhost)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context
