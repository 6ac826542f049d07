from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.access.rate_limit import RateLimiter
from shared.errors import ErrorCode, IdentityBodyError


def test_rate_limit_counts_per_key_and_says_when_to_retry(redis_client):
    limiter = RateLimiter(redis_client)
    for _ in range(3):
        limiter.check_rate("a", 3)
    with pytest.raises(IdentityBodyError) as info:
        limiter.check_rate("a", 3)
    assert info.value.code == ErrorCode.RATE_LIMITED and info.value.http_status == 429
    assert 1 <= info.value.details["retry_after_s"] <= 60
    limiter.check_rate("b", 3)  # another key is not affected


def test_rate_limit_is_atomic_under_concurrency(redis_client):
    limiter = RateLimiter(redis_client)

    def one(_):
        try:
            limiter.check_rate("c", 10)
            return True
        except IdentityBodyError:
            return False

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(40)))
    assert results.count(True) == 10


def test_job_slots(redis_client):
    limiter = RateLimiter(redis_client)
    limiter.claim_job_slot("k", "r1", 2)
    limiter.claim_job_slot("k", "r1", 2)  # the same job again (idempotent replay) takes no new slot
    limiter.claim_job_slot("k", "r2", 2)
    with pytest.raises(IdentityBodyError) as info:
        limiter.claim_job_slot("k", "r3", 2)
    assert info.value.code == ErrorCode.TOO_MANY_QUEUED and info.value.http_status == 429
    limiter.release_job_slot("k", "r1")
    limiter.claim_job_slot("k", "r3", 2)
    assert limiter.active_jobs("k") == 2


def test_stale_slots_are_dropped(redis_client):
    limiter = RateLimiter(redis_client, stale_after_s=60)
    redis_client.zadd("active-jobs:k", {"ancient": 1.0})
    limiter.claim_job_slot("k", "new", 1)
    assert limiter.active_jobs("k") == 1
