"""A hard cap on request bodies, enforced while they stream in, and a deadline for reading them.

Starlette parses a multipart body by spooling it (to disk past 1 MiB) before a route sees it, so a
cap checked in the route comes after the bytes were stored. This ASGI middleware sits in front:

- a ``Content-Length`` above the cap is answered 413 ``file_too_large`` before one byte is read;
- a chunked (or lying) body is counted as ``receive`` hands it over, and the read that crosses
  the cap raises 413 at once: nothing past the cap is stored, and the answer carries
  ``Connection: close`` so the server closes the connection instead of reading the rest;
- the whole body must arrive within ``read_timeout_s``, else 408 ``request_timeout``, so a client
  that stalls mid-upload does not hold a connection and a spooled file for ever.

The submit route may carry its photos (up to ``submit_files`` of them: the face photos and the optional
pose photo, up to ``max_upload_bytes`` each) plus the form around them (so a body over the cap holds
at least one photo over its own cap); every other route takes no body worth more than a few KiB.

Example::

    app.add_middleware(BodyLimit, submit_path="/api/v1/generate-identity-body",
                       submit_max_bytes=10 << 20, read_timeout_s=60, submit_files=6)
"""

from __future__ import annotations

import json
from typing import Any

import anyio

from api.upload import FIELD as UPLOAD_FIELD
from api.upload import size_text
from shared.errors import HTTP_STATUS, ErrorCode, IdentityBodyError

# the text fields and multipart framing around the photo
FORM_OVERHEAD_BYTES = 64 * 1024
# what any other route may be sent (none of them reads a body)
OTHER_MAX_BYTES = 64 * 1024


class BodyTooLarge(IdentityBodyError):
    """``max_bytes``: what is read; ``message``: names the limit a person knows (the photo's cap on
    the submit route, not the cap plus the room left for the form around it)."""

    def __init__(self, max_bytes: int, field: str | None, message: str) -> None:
        super().__init__(ErrorCode.FILE_TOO_LARGE, message, field=field, max_bytes=max_bytes)


class BodyReadTimeout(IdentityBodyError):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            ErrorCode.REQUEST_TIMEOUT,
            f"The request body did not arrive within {timeout_s:g} s; send it again on a faster connection.",
        )


class BodyLimit:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: Any, submit_path: str, submit_max_bytes: int, read_timeout_s: float,
                 submit_files: int = 1) -> None:
        self.app = app
        self.submit_path = submit_path
        # ``submit_files`` photos of up to ``submit_max_bytes`` each: a body past that holds one too large
        self.submit_max_bytes = int(submit_max_bytes) * int(submit_files) + FORM_OVERHEAD_BYTES
        self.photo_too_large = f"The photo is larger than {size_text(int(submit_max_bytes))}. Upload a smaller photo."
        self.read_timeout_s = float(read_timeout_s)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        submit = scope["path"] == self.submit_path
        max_bytes = self.submit_max_bytes if submit else OTHER_MAX_BYTES
        too_large = (BodyTooLarge(max_bytes, UPLOAD_FIELD, self.photo_too_large) if submit else
                     BodyTooLarge(max_bytes, None, f"The request body is larger than {size_text(max_bytes)}."))
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            await _send_error(send, too_large)
            return
        counted = _CountingReceive(receive, too_large, anyio.current_time() + self.read_timeout_s,
                                   self.read_timeout_s)
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if counted.cut_short:
                    # the rest of the body is still on the wire: the server would read (and drop)
                    # all of it to reach the next request; closing the connection refuses it
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted, tracking_send)
        except (BodyTooLarge, BodyReadTimeout) as exc:
            # raised inside a route it is already answered by the error handlers; here only when
            # something read the body outside them (a middleware, a dependency's own task)
            if started:
                raise
            await _send_error(send, exc)


class _CountingReceive:
    def __init__(self, receive: Any, too_large: BodyTooLarge, deadline: float, timeout_s: float) -> None:
        self.receive = receive
        self.too_large = too_large
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.seen = 0
        self.done = False
        self.cut_short = False

    async def __call__(self) -> dict:
        if self.done:
            # the body is complete: what follows is the disconnect message, which may come late
            return await self.receive()
        try:
            with anyio.fail_after(max(0.0, self.deadline - anyio.current_time())):
                message = await self.receive()
        except TimeoutError:
            self.cut_short = True
            raise BodyReadTimeout(self.timeout_s) from None
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.too_large.details["max_bytes"]:
                self.cut_short = True
                raise self.too_large
            self.done = not message.get("more_body", False)
        return message


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _send_error(send: Any, error: IdentityBodyError) -> None:
    body = json.dumps({"error": {"code": error.code.value, "message": error.message, "field": error.field}}).encode()
    await send({"type": "http.response.start", "status": HTTP_STATUS[error.code],
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
