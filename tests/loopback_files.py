"""A loopback HTTP server for tests that download things: serves in-memory bodies by path with
HEAD, GET and single byte ``Range`` requests, and records every request it saw.

Example::

    with LoopbackFiles({"/pack.zip": data}) as server:
        httpx.get(server.url("/pack.zip"), headers={"Range": "bytes=10-"})
        server.requests[-1].headers["Range"]   # "bytes=10-"
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class Route:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]


class LoopbackFiles:
    def __init__(self, routes: dict[str, Route | bytes], honour_range: bool = True) -> None:
        self.routes = {p: r if isinstance(r, Route) else Route(r) for p, r in routes.items()}
        self.honour_range = honour_range
        self.requests: list[SeenRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = "") -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> LoopbackFiles:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._serve(send_body=False)

            def do_GET(self) -> None:
                self._serve(send_body=True)

            def _serve(self, send_body: bool) -> None:
                parts = urlsplit(self.path)
                owner.requests.append(SeenRequest(self.command, parts.path, parts.query, dict(self.headers)))
                route = owner.routes.get(parts.path)
                if route is None:
                    self._reply(404, b"not found", {}, "text/plain", send_body)
                    return
                body, status, extra = route.body, 200, dict(route.headers)
                wanted = RANGE.match(self.headers.get("Range", "")) if owner.honour_range else None
                if wanted:
                    start = int(wanted.group(1))
                    end = int(wanted.group(2)) if wanted.group(2) else len(body) - 1
                    if start >= len(body):
                        self._reply(416, b"", {"Content-Range": f"bytes */{len(body)}"}, route.content_type, send_body)
                        return
                    extra["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
                    body, status = body[start : end + 1], 206
                extra.setdefault("Accept-Ranges", "bytes")
                self._reply(status, body, extra, route.content_type, send_body)

            def _reply(self, status: int, body: bytes, headers: dict[str, str], ctype: str, send_body: bool) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

        return Handler
