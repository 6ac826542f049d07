"""Per-key admission: a request rate (sliding window) and a cap on unfinished jobs, both atomic in
Redis/Valkey via Lua so concurrent gateway processes agree.

Keys::

    ratelimit:{key_id}     sorted set of request times (µs, from the server clock) in the last window
    active-jobs:{key_id}   sorted set of the key's unfinished request ids, scored by submit time

Example::

    limiter = RateLimiter(redis_client)
    limiter.check_rate("key_1", limit_per_min=60)            # raises 429 rate_limited with retry_after_s
    limiter.claim_job_slot("key_1", request_id, max_active=10)  # raises 429 too_many_queued
    limiter.release_job_slot("key_1", request_id)             # when the job finishes
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass

import redis

from shared.errors import ErrorCode, IdentityBodyError

RATE_KEY = "ratelimit:{}"
ACTIVE_KEY = "active-jobs:{}"
WINDOW_US = 60_000_000
JOB_KEY_PREFIX = "job:"  # shared.jobs.store.JOB_KEY without its id
# a slot younger than this may belong to a submit still writing its record
ORPHAN_SLOT_GRACE_S = 60

# Sliding-window log: exact "at most N requests in any 60 s". The server's clock is used so that
# gateways with skewed clocks share one notion of time. Returns {wait_us, used, reset_us}: wait_us
# > 0 when refused; used counts the window's requests (this one included when admitted); reset_us
# is when the oldest of them leaves the window (the RateLimit-Reset header).
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local wait = 0
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = tonumber(oldest[2]) + window - now
if redis.call('ZSCORE', KEYS[1], ARGV[3]) == false then wait = reset end
return {wait, redis.call('ZCARD', KEYS[1]), reset}
"""

# Unfinished jobs older than ARGV[4] seconds are dropped first, so a job whose finish was never
# reported (its record expired) cannot hold a slot for ever; so is a slot older than ARGV[5]
# seconds whose job record (key ARGV[6]..id) does not exist: a submit that failed with Redis down
# could not give its slot back, and the record it would have made is gone.
_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[5]))) do
  if redis.call('EXISTS', ARGV[6] .. id) == 0 then redis.call('ZREM', KEYS[1], id) end
end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class RateState:
    """A key's request budget after one request: what the ``RateLimit-*`` headers say."""

    limit: int       # requests allowed per window
    remaining: int   # requests left in the current window
    reset_s: int     # seconds until the oldest counted request leaves the window

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (IETF httpapi rate-limit headers draft).

        Example::

            RateState(60, 59, 60).headers()["RateLimit-Remaining"]   # "59"
        """
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset_s)}


class RateLimiter:
    def __init__(self, client: redis.Redis, stale_after_s: int = 7 * 24 * 3600) -> None:
        self.client = client
        self.stale_after_s = int(stale_after_s)
        self._rate = client.register_script(_RATE)
        self._claim = client.register_script(_CLAIM)

    def check_rate(self, key_id: str, limit_per_min: int) -> RateState:
        """Count one request and return the budget left; IdentityBodyError(rate_limited,
        retry_after_s=N, rate=RateState) when over the limit."""
        wait_us, used, reset_us = (int(v) for v in self._rate(
            keys=[RATE_KEY.format(key_id)], args=[limit_per_min, WINDOW_US, secrets.token_hex(6)]))
        state = RateState(limit=limit_per_min, remaining=max(0, limit_per_min - used),
                          reset_s=max(0, math.ceil(reset_us / 1_000_000)))
        if wait_us > 0:
            retry_after = max(1, math.ceil(wait_us / 1_000_000))
            raise IdentityBodyError(
                ErrorCode.RATE_LIMITED,
                f"This API key allows {limit_per_min} requests per minute; try again in {retry_after} s.",
                retry_after_s=retry_after, rate=state,
            )
        return state

    def claim_job_slot(self, key_id: str, request_id: str, max_active: int) -> None:
        """Reserve one of the key's ``max_active`` unfinished-job slots for ``request_id``."""
        args = [request_id, max_active, time.time(), self.stale_after_s, ORPHAN_SLOT_GRACE_S, JOB_KEY_PREFIX]
        ok = self._claim(keys=[ACTIVE_KEY.format(key_id)], args=args)
        if not int(ok):
            raise IdentityBodyError(
                ErrorCode.TOO_MANY_QUEUED,
                f"This API key already has {max_active} unfinished jobs; wait for one to finish or cancel one.",
                retry_after_s=5,
            )

    def release_job_slot(self, key_id: str, request_id: str) -> None:
        self.client.zrem(ACTIVE_KEY.format(key_id), request_id)

    def active_jobs(self, key_id: str) -> int:
        return int(self.client.zcard(ACTIVE_KEY.format(key_id)))
