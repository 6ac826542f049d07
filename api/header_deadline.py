"""The gateway's HTTP protocol: uvicorn's httptools parser plus a deadline for the request line and
headers.

uvicorn times out an idle keep-alive connection and the app times out a slow body (``BodyLimit``),
but nothing bounds the time between a connection's first byte and the end of its headers: a client
sending half a request line holds the connection for ever. Here every request must have its headers
complete within ``header_timeout_s`` of its connection opening (first request) or of its first byte
(the next ones on a keep-alive connection); past it the connection gets a 408 and is closed.

Why this and not another server or a proxy: uvicorn with httptools and uvloop is the fastest of the
ASGI servers measured here for status GETs, its ``limit_concurrency`` already caps connections per
process (503 past it), and the deadline is a timer on two parser callbacks. A proxy in front
(compose/k8s) would add a hop per request and still leave ``idbody api`` without one.

Example::

    uvicorn.run("api.main:create_app", factory=True, http="api.header_deadline:HeaderDeadlineProtocol",
                limit_concurrency=settings.max_connections)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.settings import get_settings

log = logging.getLogger(__name__)

_TIMEOUT_BODY = (b'{"error": {"code": "request_timeout", "message": "The request headers did not arrive in time; '
                 b'send the request again.", "field": null}}')
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = get_settings().header_timeout_s  # read once per process
        self.header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self.header_deadline is None:
            self.header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _headers_late(self) -> None:
        self.header_deadline = None
        if self.transport.is_closing():
            return
        log.info("closing a connection from %s: request headers not complete within %g s",
                 self.client[0] if self.client else "?", self.header_timeout_s)
        # a request already running on this connection (pipelined) is not answered twice
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()
