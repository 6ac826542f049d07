"""``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` on every response of a
rate-limited route, whatever response the route builds (most return a JSONResponse directly, which
FastAPI's injected ``Response`` headers never reach).

The auth dependency puts the key's ``RateState`` on ``request.state.rate_limit``; this pure ASGI
middleware copies it into the response headers. Requests without a key (auth disabled) are not
limited and get none. A 429 carries the same headers from the error handler.

Example::

    app.add_middleware(RateLimitHeaders)
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATE_KEY = "rate_limit"


class RateLimitHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            rate = state.get(STATE_KEY)
            if message["type"] == "http.response.start" and rate is not None:
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                         for k, v in rate.headers().items() if k.lower().encode("latin-1") not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
