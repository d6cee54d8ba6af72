"""The browser page's files, served from memory on the server's port.

It is: `StaticFiles`, which reads a small directory (the launcher passes `clients/web/`) once,
at start-up, and answers `GET` paths with its files: `/` is `index.html`, anything else must name
a file in the directory exactly (no `..`, no subdirectories, no listing). Each response carries
its content type, `Cache-Control: no-cache` (a restarted server's page is never stale) and
`X-Content-Type-Options: nosniff`. Reading everything up front keeps file I/O off the event loop
and makes the set of answerable paths fixed.

It is not: a general web server (no ranges, no conditional requests, no directories) and knows
nothing of websockets beyond the `Response` it builds for `process_request`.
"""

from __future__ import annotations

import http
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Response

MAX_FILE_BYTES = 1 << 20  # a page's module or stylesheet; anything bigger does not belong here
MAX_FILES = 64  # the page is a handful of files
# What the page's files are; `mimetypes` alone depends on the host's /etc/mime.types.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes  # the whole file
    content_type: str  # the Content-Type header


class StaticFiles:
    """The files of one directory (not its subdirectories), loaded once."""

    def __init__(self, directory: str | Path):
        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"no web page directory at {root}")
        self.files: dict[str, StaticFile] = {}
        for path in sorted(root.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.stat().st_size > MAX_FILE_BYTES:
                continue
            kind = CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            self.files["/" + path.name] = StaticFile(path.read_bytes(), kind)
            if len(self.files) >= MAX_FILES:
                break

    def lookup(self, path: str) -> StaticFile | None:
        """The file a request path names (query removed, `/` = index.html), or None."""
        path = path.split("?", 1)[0].split("#", 1)[0]
        return self.files.get("/index.html" if path == "/" else path)

    def respond(self, path: str) -> Response | None:
        """The response for a GET of `path`, or None when it names no file."""
        found = self.lookup(path)
        if found is None:
            return None
        headers = Headers(
            [
                ("Content-Type", found.content_type),
                ("Content-Length", str(len(found.body))),
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
                ("Connection", "close"),
            ]
        )
        return Response(http.HTTPStatus.OK.value, http.HTTPStatus.OK.phrase, headers, found.body)
