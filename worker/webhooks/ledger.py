"""What Redis knows about delivering one webhook event, so that an event is never delivered twice
after a 2xx, even when two io workers got the same delivery task (a redelivered GPU task that
finished the job again does not send a second one: ``shared.jobs.end`` announces each (job, final
status) once).

Keys (``event`` is the job's final status: succeeded, failed or canceled)::

    webhook:lock:{request_id}:{event}        held while one attempt is in flight (expires)
    webhook:delivered:{request_id}:{event}   SET NX only after a 2xx; checked before every attempt

Both match ``shared.jobs.retention.WEBHOOK_MARKERS``, so purging a job deletes them with the rest.

Example::

    ledger = DeliveryLedger(redis_client, ttl_s=settings.job_retention_s)
    token = ledger.lock(request_id, "succeeded", hold_s=40)   # None while another attempt runs
    ledger.mark_delivered(request_id, "succeeded")           # True the first time only
"""

from __future__ import annotations

import secrets

import redis

LOCK_KEY = "webhook:lock:{}:{}"
DELIVERED_KEY = "webhook:delivered:{}:{}"

# delete the lock only if it still holds our token (it may have expired and been taken by another)
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class DeliveryLedger:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = int(ttl_s)
        self._unlock = client.register_script(_UNLOCK)

    def is_delivered(self, request_id: str, event: str) -> bool:
        return bool(self.client.exists(DELIVERED_KEY.format(request_id, event)))

    def mark_delivered(self, request_id: str, event: str) -> bool:
        """Record a 2xx; False when it was already recorded."""
        return bool(self.client.set(DELIVERED_KEY.format(request_id, event), "1", nx=True, ex=self.ttl_s))

    def lock(self, request_id: str, event: str, hold_s: float) -> str | None:
        """Take the in-flight lock for ``hold_s`` seconds; its token, or None when someone holds it."""
        token = secrets.token_hex(8)
        taken = self.client.set(LOCK_KEY.format(request_id, event), token, nx=True, px=max(1, int(hold_s * 1000)))
        return token if taken else None

    def unlock(self, request_id: str, event: str, token: str) -> None:
        self._unlock(keys=[LOCK_KEY.format(request_id, event)], args=[token])
