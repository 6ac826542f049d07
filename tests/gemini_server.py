"""A loopback HTTP server that speaks the part of the Gemini REST API the ``google-genai`` SDK calls
for ``models.generate_content``: ``POST /v1beta/models/{model}:generateContent`` with the key in
``x-goog-api-key``. Tests script its replies and read back what it received.

Example::

    with GeminiServer.start(api_key="k") as server:
        server.script(Reply(429, error_body(429, "RESOURCE_EXHAUSTED")), Reply(200, answer_body({...})))
        ...  # point Settings.gemini_base_url at server.base_url
        server.requests[0].body["contents"]
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

# A complete, plausible answer for tests that need a good one.
GOOD_ANSWER: dict[str, Any] = {
    "skin_tone": "warm ivory",
    "ethnicity": "East Asian",
    "age_range": "25-34",
    "gender_presentation": "feminine",
    "hair": "long straight black hair",
    "confidence": 0.82,
}

_PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):generateContent$")


@dataclass
class Reply:
    """One scripted answer. ``delay_s``: wait before answering (cut short when the server stops).
    ``hold_until``: wait until this many requests have arrived in total, at most ``hold_s``."""

    status: int = 200
    body: dict[str, Any] | str = field(default_factory=dict)
    delay_s: float = 0.0
    hold_until: int | None = None
    hold_s: float = 0.0


@dataclass
class Received:
    path: str
    model: str
    headers: dict[str, str]
    body: dict[str, Any]


def answer_body(answer: dict[str, Any] | str, finish_reason: str = "STOP") -> dict[str, Any]:
    """A generateContent response whose only text part is ``answer`` (JSON-encoded if a dict)."""
    text = answer if isinstance(answer, str) else json.dumps(answer)
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish_reason, "index": 0}
        ],
        "modelVersion": "fake-gemini",
    }


def error_body(code: int, status: str, message: str = "scripted error") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


class GeminiServer:
    """Threaded loopback server; replies come from the script, then ``default``."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.default = Reply(200, answer_body({"confidence": 0.5}))
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: deque[Reply] = deque()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @classmethod
    @contextmanager
    def start(cls, api_key: str = "test-key") -> Iterator["GeminiServer"]:
        server = cls(api_key)
        server._thread.start()
        try:
            yield server
        finally:
            server._stopping.set()
            with server._cond:
                server._cond.notify_all()
            server._httpd.shutdown()
            server._httpd.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def count(self) -> int:
        with self._cond:
            return len(self.requests)

    def reset(self) -> None:
        """Forget what was received and scripted (for a server shared by several tests)."""
        with self._cond:
            self.requests.clear()
            self._script.clear()
            self.default = Reply(200, answer_body({"confidence": 0.5}))
            self.max_in_flight = 0

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    # --- request handling ------------------------------------------------------------------

    def _next_reply(self, received: Received) -> Reply:
        with self._cond:
            self.requests.append(received)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._cond.notify_all()
            return self._script.popleft() if self._script else self.default

    def _wait(self, reply: Reply) -> None:
        if reply.hold_until is not None:
            deadline = time.monotonic() + reply.hold_s
            with self._cond:
                self._cond.wait_for(
                    lambda: len(self.requests) >= reply.hold_until
                    or self._stopping.is_set()
                    or time.monotonic() >= deadline,
                    timeout=reply.hold_s,
                )
        if reply.delay_s:
            self._stopping.wait(reply.delay_s)

    def _done(self) -> None:
        with self._cond:
            self.in_flight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                match = _PATH.match(self.path)
                if match is None:
                    self._send(404, error_body(404, "NOT_FOUND", f"no route {self.path}"))
                    return
                if self.headers.get("x-goog-api-key") != server.api_key:
                    self._send(400, error_body(400, "INVALID_ARGUMENT", "API key not valid."))
                    return
                received = Received(self.path, match["model"], dict(self.headers), json.loads(raw))
                reply = server._next_reply(received)
                try:
                    server._wait(reply)
                    self._send(reply.status, reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout); nothing to answer
                finally:
                    server._done()

            def _send(self, status: int, body: dict[str, Any] | str) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
