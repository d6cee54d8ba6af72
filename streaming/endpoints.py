"""The server's plain HTTP GET endpoints beside the websocket: probes, metrics, transcripts.

It is: the answers to
- `GET /healthz` (liveness: 200 once the engine is warm, until shutdown) and `GET /readyz`
  (200 while a new session would be admitted: warm, not stopping, under the hard cap and the
  capacity model; 503 with the reason otherwise) — no credential, they reveal nothing;
- `GET /metrics` (Prometheus text) and `GET /v1/transcripts/<session id>` (the session's finals
  from the journal, JSON) — only after `Server.authorize` admitted the request; a transcript
  only for the key that made it.
It is not: routing of the websocket, or the credential check itself (`auth.py`).
"""

from __future__ import annotations

import http
import json
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from patchstream.streaming.auth import Principal
from patchstream.streaming.journal import TranscriptNotFound
from patchstream.streaming.metrics import CONTENT_TYPE
from patchstream.streaming.protocol import HEALTH_PATH, METRICS_PATH, NATIVE_STREAM_PATH, READY_PATH, TRANSCRIPT_PATH

if TYPE_CHECKING:
    from patchstream.streaming.server import Server

OPEN_PATHS = frozenset({HEALTH_PATH, READY_PATH})  # answered without a credential
AUTHORIZED_PATHS = frozenset({METRICS_PATH})  # answered here after the credential check (and TRANSCRIPT_PATH + id)


def probe(server: Server, connection: ServerConnection, path: str) -> Response:
    if path == HEALTH_PATH:
        if server.ready:
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "warming up or stopping\n")
    if server.admits():
        return connection.respond(http.HTTPStatus.OK, "ready\n")
    reason = "at capacity" if server.ready else "warming up or stopping"
    return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {reason}\n")


async def authorized(server: Server, connection: ServerConnection, path: str, principal: Principal) -> Response:
    """An endpoint for a request `Server.authorize` let through."""
    if path == METRICS_PATH:
        response = connection.respond(http.HTTPStatus.OK, "")
        return _with_body(response, server.metrics.render(), CONTENT_TYPE)
    if path.startswith(TRANSCRIPT_PATH):
        session_id = path[len(TRANSCRIPT_PATH) :]
        try:
            transcript = await server.journal.read(session_id, principal.key_id)
        except TranscriptNotFound:
            return json_response(connection, http.HTTPStatus.NOT_FOUND, {"code": "not_found", "message": "no transcript with that id for this key"})
        return json_response(connection, http.HTTPStatus.OK, transcript)
    return connection.respond(http.HTTPStatus.NOT_FOUND, f"unknown path; the stream endpoint is {NATIVE_STREAM_PATH}\n")


def json_response(connection: ServerConnection, status: http.HTTPStatus, body: dict) -> Response:
    response = connection.respond(status, "")
    return _with_body(response, (json.dumps(body, ensure_ascii=False) + "\n").encode(), "application/json")


def _with_body(response: Response, body: bytes, content_type: str) -> Response:
    # Headers is a multidict: assignment would add a second value, so replace by deleting first.
    for name, value in (("Content-Type", content_type), ("Content-Length", str(len(body)))):
        del response.headers[name]
        response.headers[name] = value
    response.body = body
    return response
