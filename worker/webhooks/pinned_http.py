"""One HTTP(S) POST to an address fixed in advance (see ``shared.url_guard``), for webhook delivery.

Why httpcore and a custom network backend: the connection must go to the address the SSRF guard
checked — not to whatever a second DNS lookup says — while the request still carries the real host
name in ``Host`` and, for https, in SNI and certificate verification. httpcore takes the host for
``Host``, SNI and ``server_hostname`` from the URL and asks its *network backend* only for a TCP
socket; our backend opens that socket to the pinned address. httpcore never follows redirects and
never reads proxy variables from the environment (a proxy would resolve the name again).

The whole exchange has one deadline (``timeout_s``): every socket read and write gets what is left of
it, so a receiver that drips bytes slowly cannot hold an io worker for longer. The response body is
never read: only the status line and headers matter.

Example::

    answer = post_pinned(target, b'{"a":1}', {"content-type": "application/json"}, timeout_s=10)
    answer.status_code   # 200, or None with answer.error set
"""

from __future__ import annotations

import ssl
import time
import typing
from dataclasses import dataclass

import httpcore

from shared.url_guard import WebhookTarget

USER_AGENT = "identity-body-webhooks/1"
_NETWORK_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError)


@dataclass(frozen=True)
class HttpAnswer:
    status_code: int | None
    retry_after: str | None = None
    error: str | None = None


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose reads and writes never wait past a fixed deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("webhook deadline passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.SyncBackend):
    """Opens every TCP connection to ``address``, whatever host name the URL carries."""

    def __init__(self, address: str, deadline: float) -> None:
        self.address = address
        self.deadline = deadline
        self.connects: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: typing.Iterable | None = None
                    ) -> httpcore.NetworkStream:
        self.connects.append((self.address, port))
        left = max(0.001, self.deadline - time.monotonic())
        timeout = left if timeout is None else min(timeout, left)
        stream = super().connect_tcp(self.address, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self.deadline)

    def connect_unix_socket(self, *args: typing.Any, **kwargs: typing.Any) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are never webhook targets")


def post_pinned(target: WebhookTarget, body: bytes, headers: dict[str, str], timeout_s: float,
                ssl_context: ssl.SSLContext | None = None) -> HttpAnswer:
    """POST ``body`` to ``target.url`` over a connection to ``target.address``; no redirects.

    Network errors and timeouts come back as ``HttpAnswer(None, error=...)``, never raised.
    """
    deadline = time.monotonic() + timeout_s
    backend = PinnedBackend(target.address, deadline)
    timeouts = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
    sent = {"user-agent": USER_AGENT, "content-type": "application/json", **headers}
    try:
        with httpcore.ConnectionPool(ssl_context=ssl_context or ssl.create_default_context(),
                                     network_backend=backend, max_connections=1, retries=0) as pool:
            with pool.stream("POST", target.url, headers=list(sent.items()), content=body,
                             extensions={"timeout": timeouts}) as response:
                retry_after = _header(response.headers, b"retry-after")
                return HttpAnswer(status_code=response.status, retry_after=retry_after)
    except _NETWORK_ERRORS as exc:
        return HttpAnswer(status_code=None, error=f"{type(exc).__name__}: {exc}"[:300])


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
