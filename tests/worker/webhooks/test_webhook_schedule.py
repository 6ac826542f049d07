from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from worker.webhooks.schedule import Outcome, backoff_delay, classify, next_delay, parse_retry_after


@pytest.mark.parametrize(
    "code,outcome",
    [(200, Outcome.DELIVERED), (204, Outcome.DELIVERED), (None, Outcome.RETRY), (500, Outcome.RETRY),
     (503, Outcome.RETRY), (429, Outcome.RETRY), (408, Outcome.RETRY), (400, Outcome.REJECTED),
     (404, Outcome.REJECTED), (410, Outcome.REJECTED), (302, Outcome.REJECTED), (301, Outcome.REJECTED)],
)
def test_classify(code, outcome):
    assert classify(code) is outcome


def test_backoff_doubles_with_equal_jitter_and_cap():
    lows = [backoff_delay(a, 10, 100, lambda: 0.0) for a in range(1, 7)]
    highs = [backoff_delay(a, 10, 100, lambda: 1.0) for a in range(1, 7)]
    assert lows == [5, 10, 20, 40, 50, 50]
    assert highs == [10, 20, 40, 80, 100, 100]


def test_next_delay_bounds_and_retry_after():
    assert next_delay(1, 3, 10, 3600, None, lambda: 0.5) == 7.5
    assert next_delay(2, 3, 10, 3600, 120.0, lambda: 0.5) == 120.0  # Retry-After raises it
    assert next_delay(2, 3, 10, 3600, 1.0, lambda: 0.5) == 15.0  # never lowers it
    assert next_delay(2, 3, 10, 60, 7200.0, lambda: 0.5) == 60  # capped
    assert next_delay(3, 3, 10, 3600, None, lambda: 0.5) is None  # attempts used up


def test_parse_retry_after():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    assert parse_retry_after("30", now) == 30.0
    later = datetime(2026, 1, 1, 0, 2, tzinfo=timezone.utc)
    assert parse_retry_after(format_datetime(later, usegmt=True), now) == 120.0
    earlier = datetime(2025, 12, 31, tzinfo=timezone.utc)
    assert parse_retry_after(format_datetime(earlier, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
