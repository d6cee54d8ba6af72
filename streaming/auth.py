"""Who may use the server: API keys, signed expiring tokens, the browser origin allow-list.

It is: one sans-I/O check, `Authenticator.check(AuthRequest)`, that every endpoint calls with the
request's headers, query and the time (websocket paths and HTTP GETs alike), answering the
`Principal` it admits or raising `AuthError` (an HTTP status and a protocol error code). Also the
token format (`mint_token`), the key file loader and `redact`, which strips credentials from any
text bound for a log.

It is not: admission by load (`admission.py`) or the per-key usage counters (`admission.py`
holds them too, because they are counted where sessions are admitted).

Credentials:
- an API key in `Authorization: Bearer <key>` (servers, the CLI). Never in a URL: a URL lands in
  proxies' and browsers' logs, so a raw key in the query is refused;
- a signed token `<key id>.<expiry unix s>.<signature>` in the header or in the query as
  `access_token=` (browsers cannot set websocket headers). The signature is HMAC-SHA256 of
  "<key id>.<expiry>" under the key's own secret, so whoever holds a key can mint short-lived
  tokens for its web page without calling the server, and the server stores nothing per token.
Secrets are compared with `hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qs, urlsplit

ANONYMOUS = "anonymous"  # the principal of a server without keys (loopback only, or --no-auth)
TOKEN_QUERY_PARAM = "access_token"  # browsers pass a signed token here
MAX_TOKEN_TTL_S = 24 * 3600.0  # a token valid for longer is refused: tokens are for short browser sessions
MIN_SECRET_CHARS = 16  # a shorter API key is guessable; the key file loader refuses it


class AuthError(Exception):
    """A refused request: the HTTP status to answer and the protocol error code to name."""

    def __init__(self, status: http.HTTPStatus, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ApiKey:
    """One client's credential and its limits."""

    key_id: str  # public name of the key: in logs, metrics, journals; never secret
    secret: str  # the key itself (Bearer value, token signing key); never logged
    max_sessions: int | None = None  # concurrent sessions of this key; None = only the server's limit
    max_media_minutes: float | None = None  # media minutes this key may stream per server run; None = no limit


@dataclass(frozen=True)
class AuthConfig:
    """The server's credential rules (from `--api-key`, `--keys-file`, `PATCHSTREAM_API_KEYS`)."""

    keys: tuple[ApiKey, ...] = ()  # empty: no credentials are asked (see `required`)
    allowed_origins: tuple[str, ...] = ()  # browser origins besides the server's own; "*" = any
    # Without keys a server is open. It may only listen on loopback then, unless this is False
    # (`--no-auth`: the operator says the network is private). See `check_bind`.
    loopback_only_when_open: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.keys)


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for."""

    key_id: str  # ANONYMOUS when the server has no keys
    max_sessions: int | None = None  # from the key
    max_media_minutes: float | None = None  # from the key


@dataclass(frozen=True)
class AuthRequest:
    """What the check reads of a request, whatever its endpoint."""

    path: str  # the request target, query included
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive lookups are done here
    now: float = 0.0  # Unix time, for token expiry

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    def query(self, name: str) -> str | None:
        values = parse_qs(urlsplit(self.path).query).get(name)
        return values[0] if values else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signature(secret: str, key_id: str, expires: int) -> str:
    return _b64(hmac.new(secret.encode(), f"{key_id}.{expires}".encode(), hashlib.sha256).digest())


def mint_token(key: ApiKey, ttl_s: float, now: float | None = None) -> str:
    """A token for `key` valid for `ttl_s` seconds (at most MAX_TOKEN_TTL_S)."""
    if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
        raise ValueError(f"token lifetime must be in (0, {MAX_TOKEN_TTL_S:g}] seconds")
    expires = int((time.time() if now is None else now) + ttl_s)
    return f"{key.key_id}.{expires}.{_signature(key.secret, key.key_id, expires)}"


class Authenticator:
    """The one credential check of every endpoint."""

    def __init__(self, config: AuthConfig):
        self.config = config
        self._by_id = {key.key_id: key for key in config.keys}

    def check(self, request: AuthRequest) -> Principal:
        """The principal the request speaks for; AuthError when it is refused."""
        self._check_origin(request)
        if not self.config.enabled:
            return Principal(ANONYMOUS)
        header = request.header("Authorization")
        if header is not None:
            scheme, _, credential = header.partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise AuthError(http.HTTPStatus.UNAUTHORIZED, "unauthorized", "use `Authorization: Bearer <api key or token>`")
            return self._principal(self._key_for(credential.strip(), request.now))
        token = request.query(TOKEN_QUERY_PARAM)
        if token is not None:
            if token.count(".") != 2:
                raise AuthError(
                    http.HTTPStatus.UNAUTHORIZED, "unauthorized",
                    f"`{TOKEN_QUERY_PARAM}` takes a signed token, never an API key (URLs get logged)",
                )
            return self._principal(self._key_for(token, request.now))
        raise AuthError(
            http.HTTPStatus.UNAUTHORIZED, "unauthorized",
            f"credentials required: `Authorization: Bearer <api key>` or `?{TOKEN_QUERY_PARAM}=<token>`",
        )

    def _key_for(self, credential: str, now: float) -> ApiKey:
        parts = credential.split(".")
        if len(parts) == 3:
            return self._token_key(parts, now)
        # Every key is compared (no early exit), so timing tells nothing about which one is near.
        found = None
        for key in self.config.keys:
            if hmac.compare_digest(key.secret.encode(), credential.encode()):
                found = key
        if found is None:
            raise AuthError(http.HTTPStatus.UNAUTHORIZED, "unauthorized", "unknown API key")
        return found

    def _token_key(self, parts: list[str], now: float) -> ApiKey:
        key_id, expires_text, signature = parts
        key = self._by_id.get(key_id)
        if key is None or not expires_text.isdigit():
            raise AuthError(http.HTTPStatus.UNAUTHORIZED, "unauthorized", "invalid token")
        expected = _signature(key.secret, key_id, int(expires_text))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise AuthError(http.HTTPStatus.UNAUTHORIZED, "unauthorized", "invalid token")
        if int(expires_text) <= now:
            raise AuthError(http.HTTPStatus.UNAUTHORIZED, "unauthorized", "token expired; mint a new one")
        if int(expires_text) > now + MAX_TOKEN_TTL_S + 60:
            raise AuthError(http.HTTPStatus.UNAUTHORIZED, "unauthorized", "token lifetime exceeds 24 h")
        return key

    @staticmethod
    def _principal(key: ApiKey) -> Principal:
        return Principal(key.key_id, key.max_sessions, key.max_media_minutes)

    def _check_origin(self, request: AuthRequest) -> None:
        """Browsers send `Origin`; other clients do not. A page may connect from the server's own
        origin or an allowed one, so a hostile page cannot ride a user's token or a loopback server."""
        origin = request.header("Origin")
        if origin is None:
            return
        allowed = self.config.allowed_origins
        if "*" in allowed or origin in allowed:
            return
        host = request.header("Host")
        if host is not None and urlsplit(origin).netloc.lower() == host.lower():
            return  # same origin: the server's own web page
        raise AuthError(http.HTTPStatus.FORBIDDEN, "forbidden_origin", "this page's origin may not use the server")


def check_bind(config: AuthConfig, host: str) -> None:
    """Refuse to serve other machines without keys unless the operator said so (`--no-auth`)."""
    loopback = host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
    if not config.enabled and config.loopback_only_when_open and not loopback:
        raise ValueError(
            f"refusing to serve {host} without API keys: give --api-key/--keys-file, or --no-auth on a private network"
        )


# --- configuration sources --------------------------------------------------------------------

_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def parse_key(text: str) -> ApiKey:
    """`ID:SECRET` (as `--api-key` and PATCHSTREAM_API_KEYS take it); ValueError if malformed."""
    key_id, sep, secret = text.partition(":")
    if not sep or not _KEY_ID.match(key_id):
        raise ValueError("an API key is ID:SECRET, ID made of letters, digits, _ and -")
    return _key(key_id, secret)


def _key(key_id: str, secret: str, **limits) -> ApiKey:
    if len(secret) < MIN_SECRET_CHARS or "." in secret or any(c.isspace() for c in secret):
        raise ValueError(f"key {key_id!r}: a secret needs {MIN_SECRET_CHARS}+ characters, no dots or spaces")
    return ApiKey(key_id, secret, **limits)


def load_keys_file(path: str | Path) -> tuple[ApiKey, ...]:
    """A JSON file: {"keys": [{"id": ..., "secret": ..., "max_sessions": 4, "max_media_minutes": 600}]}."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    keys = []
    for entry in data.get("keys", []):
        if not _KEY_ID.match(str(entry.get("id", ""))):
            raise ValueError(f"{path}: every key needs an `id` of letters, digits, _ and -")
        keys.append(
            _key(entry["id"], str(entry.get("secret", "")), max_sessions=entry.get("max_sessions"),
                 max_media_minutes=entry.get("max_media_minutes"))
        )
    return tuple(keys)


# --- keeping credentials out of logs ------------------------------------------------------------

_SECRETS = re.compile(
    r"((?:access_token|resume_token)=)[^&\s\"']+|(Bearer\s+)[^\s\"',]+|(authorization:\s*)[^\r\n]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with every credential replaced by `***` (query tokens, Bearer values, auth headers)."""
    return _SECRETS.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)
