"""Every error leaves the gateway as ``{"error": {"code", "message", "field"}}``: our own
IdentityBodyError, FastAPI's request validation errors, Starlette's 404/405 and anything unexpected.

Example::

    install_error_handlers(app)
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from shared.errors import ErrorCode, IdentityBodyError
from shared.transient import RETRY_AFTER_S, is_transient

log = logging.getLogger(__name__)

_HTTP_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.INVALID_PARAMETER,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.FILE_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.INVALID_PARAMETER,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}


def error_response(error: IdentityBodyError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": error.code.value, "message": error.message, "field": error.field}}
    return JSONResponse(body, status_code=error.http_status, headers=headers)


async def _identity_body_error(request: Request, exc: IdentityBodyError) -> JSONResponse:
    return error_response(exc, _headers_for(exc))


def _headers_for(exc: IdentityBodyError) -> dict[str, str] | None:
    """Retry-After (and RateLimit-*) on 429s and 503s, WWW-Authenticate on 401s (RFC 6750)."""
    if exc.code is ErrorCode.UNAUTHORIZED:
        return {"WWW-Authenticate": 'Bearer realm="identity-body"'}
    retry_after = exc.details.get("retry_after_s")
    if retry_after is None and exc.code is ErrorCode.SERVICE_UNAVAILABLE:
        retry_after = RETRY_AFTER_S
    if retry_after is None:
        return None
    rate = exc.details.get("rate")
    return {"Retry-After": str(int(retry_after)), **(rate.headers() if rate is not None else {})}


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    # loc is ("path"|"query"|"body"|"header", name, ...): the name is what the client sent
    loc = [str(p) for p in first.get("loc", ())][1:]
    field = ".".join(loc) or None
    message = f"{field}: {first.get('msg', 'invalid value')}." if field else f"{first.get('msg', 'Invalid request')}."
    code = ErrorCode.MISSING_FIELD if first.get("type") == "missing" else ErrorCode.INVALID_PARAMETER
    return error_response(IdentityBodyError(code, message, field=field))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.INTERNAL_ERROR if exc.status_code >= 500 else ErrorCode.INVALID_PARAMETER)
    headers = exc.headers
    if exc.status_code == 404:
        message = f"No route at {request.url.path}."
    elif exc.status_code == 405:
        allowed = _allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed here; allowed: {allowed}."
        headers = {**(exc.headers or {}), "Allow": allowed}
    else:
        message = str(exc.detail)
    body = {"error": {"code": code.value, "message": message, "field": None}}
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette's 405 names only the first route that
    matched the path, so GET /jobs/{id} hid DELETE /jobs/{id}. Asks each top-level route whether
    it would fully match the request with each method (the routes' public ``matches``)."""
    from starlette.routing import Match

    allowed = [method for method in _METHODS
               if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                      for route in request.app.router.routes)]
    return ", ".join(allowed)


def _unavailable(request: Request, exc: BaseException) -> JSONResponse:
    log.error("%s %s: a dependency is unreachable: %s", request.method, request.url.path, type(exc).__name__)
    error = IdentityBodyError(ErrorCode.SERVICE_UNAVAILABLE,
                              "A service this request needs is unreachable for a moment; try again shortly.")
    return error_response(error, {"Retry-After": str(RETRY_AFTER_S)})


async def _redis_unavailable(request: Request, exc: redis.RedisError) -> JSONResponse:
    if not is_transient(exc):
        return await _unexpected_error(request, exc)
    return _unavailable(request, exc)


async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
    """The client went away while sending its body: nothing to answer and nothing went wrong here."""
    log.info("%s %s: the client disconnected before its request body was complete", request.method,
             request.url.path, extra={"event": "request.client_disconnected"})
    return Response(status_code=400)  # never read: the connection is gone


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if is_transient(exc):  # S3 or the broker down, on whatever route met it
        return _unavailable(request, exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    error = IdentityBodyError(ErrorCode.INTERNAL_ERROR, "Something went wrong on our side; try again.")
    return error_response(error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(IdentityBodyError, _identity_body_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Redis/Valkey down (API-key lookup, job store) on any route: 503 with Retry-After, not 500
    app.add_exception_handler(redis.RedisError, _redis_unavailable)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected_error)
