"""When to try a webhook again. Pure: no clock, no network; the caller passes ``now`` and a random source.

Rules: a 2xx is delivered; network errors, timeouts, 5xx, 408 and 429 are retried with exponential
backoff and *equal jitter* (half the delay fixed, half random, so retries of many jobs spread out
but never fire immediately); a ``Retry-After`` from the receiver is honoured as a lower bound; every
other answer (3xx — redirects are never followed — and 4xx) stops. At most ``max_attempts`` tries.

Example::

    next_delay(attempt=1, max_attempts=8, base_s=10, cap_s=3600, retry_after_s=None, rand=lambda: 0.5)
    # 7.5  (between 5 and 10 seconds)
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parsedate_to_datetime
from enum import StrEnum


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # a retryable failure; another attempt may follow
    REJECTED = "rejected"  # the receiver said no for good (4xx other than 408/429, 3xx)
    EXHAUSTED = "exhausted"  # retryable, but the attempts are used up
    REFUSED = "refused"  # the URL failed the SSRF guard at delivery time


RETRYABLE_4XX = frozenset({408, 429})


def classify(status_code: int | None) -> Outcome:
    """DELIVERED, RETRY or REJECTED for one answer; ``None`` means no answer (network error, timeout).

    Example::

        classify(503)   # Outcome.RETRY
        classify(410)   # Outcome.REJECTED
    """
    if status_code is None or status_code >= 500 or status_code in RETRYABLE_4XX:
        return Outcome.RETRY
    if 200 <= status_code < 300:
        return Outcome.DELIVERED
    return Outcome.REJECTED


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None.

    Example::

        parse_retry_after("120", now=0)                              # 120.0
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=...)  # seconds until then, >= 0
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float]) -> float:
    """Wait after failed attempt number ``attempt`` (1-based): base * 2^(attempt-1), capped, equal jitter.

    Example::

        backoff_delay(3, base_s=10, cap_s=3600, rand=lambda: 1.0)   # 40.0
    """
    ceiling = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + ceiling / 2 * min(1.0, max(0.0, rand()))


def next_delay(
    attempt: int,
    max_attempts: int,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None,
    rand: Callable[[], float],
) -> float | None:
    """Seconds before the next attempt after retryable failure number ``attempt``, or None when
    no attempt is left. Retry-After raises the delay, never above ``cap_s``.

    Example::

        next_delay(8, 8, 10, 3600, None, rand=lambda: 0.5)   # None: that was the last attempt
    """
    if attempt >= max_attempts:
        return None
    delay = backoff_delay(attempt, base_s, cap_s, rand)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, cap_s)
