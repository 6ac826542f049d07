"""Which failures of Redis/Valkey, S3 or the broker are transient (the dependency is down or slow:
retry later) rather than permanent (a bad request, a bug). The gateway answers transient ones
503 ``service_unavailable`` with ``Retry-After``; the worker retries them with backoff instead of
failing the job.

The check looks at the exception and the chain it was raised from, and never imports boto3 or
kombu itself (the gateway starts without them loaded): their classes are compared only when the
module that defines them is already loaded, which it is whenever one of them was raised.

Example::

    try:
        storage.get_upload(key)
    except Exception as exc:
        if is_transient(exc): ...   # S3 unreachable: wait and try again
"""

from __future__ import annotations

import sys

import redis

# S3 answers that mean "not now" rather than "never"
_RETRYABLE_S3_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed",
    "503", "500", "502", "504",
})

RETRY_AFTER_S = 5  # what a 503 tells clients to wait; dependencies restart in seconds


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) says a dependency is unreachable or busy.

    Example::

        is_transient(redis.ConnectionError("refused"))   # True
        is_transient(ValueError("bad"))                  # False
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_itself(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return True
    if isinstance(exc, redis.ResponseError) and str(exc).startswith(("LOADING", "MASTERDOWN", "TRYAGAIN")):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        network = (botocore.EndpointConnectionError, botocore.ConnectionClosedError,
                   botocore.ConnectTimeoutError, botocore.ReadTimeoutError, botocore.HTTPClientError)
        if isinstance(exc, network):
            return True
        if isinstance(exc, botocore.ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return int(status) >= 500 or str(error.get("Code", "")) in _RETRYABLE_S3_CODES
    kombu = sys.modules.get("kombu.exceptions")
    if kombu is not None and isinstance(exc, kombu.OperationalError):
        return True
    return False
