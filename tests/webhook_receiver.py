"""A real HTTP(S) receiver on loopback for webhook tests: scripted answers, every request recorded."""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers requests with ``script`` in order (the last entry repeats).
    An entry is a status code or (status, {header: value}). With ``stall`` set, every request is
    read whole and then answered only once the event is set (a receiver slower than the timeout)."""

    script: list = field(default_factory=lambda: [200])
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    host: str = "127.0.0.1"
    ssl_context: ssl.SSLContext | None = None
    stall: threading.Event | None = None

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.stall is not None:
                    receiver.stall.wait(30)
                index = min(len(receiver.requests), len(receiver.script)) - 1
                entry = receiver.script[index]
                status, extra = (entry, {}) if isinstance(entry, int) else entry
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address) -> bool:
                receiver.connections += 1
                return True

        self.server = Server((self.host, 0), Handler)
        if self.ssl_context is not None:
            self.server.socket = self.ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook", host: str | None = None, scheme: str = "http") -> str:
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
