"""What Redis knows about delivering one webhook event, so that an event is enqueued once per
(job, final status) and never delivered twice after a 2xx — even when the GPU task that finished
the job was redelivered, or two io workers got the same delivery task.

Keys (``event`` is the job's final status: succeeded, failed or canceled)::

    webhook:enqueued:{request_id}:{event}    SET NX (short-lived) before the delivery task is sent,
                                             kept for ttl_s once it was
    webhook:lock:{request_id}:{event}        held while one attempt is in flight (expires)
    webhook:delivered:{request_id}:{event}   SET NX only after a 2xx; checked before every attempt

Example::

    ledger = WebhookLedger(redis_client, ttl_s=settings.job_retention_s)
    ledger.enqueue_once(celery_app, request_id, "succeeded")   # True the first time only
"""

from __future__ import annotations

import secrets
from typing import Any

import redis

from shared.queues import DELIVER_WEBHOOK_TASK, IO_QUEUE

ENQUEUED_KEY = "webhook:enqueued:{}:{}"
LOCK_KEY = "webhook:lock:{}:{}"
DELIVERED_KEY = "webhook:delivered:{}:{}"

# delete the lock only if it still holds our token (it may have expired and been taken by another)
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


# How long the enqueue marker lives while the send is in flight. A finisher killed between taking
# the marker and sending leaves it behind; it must expire well before the broker redelivers that
# finisher's task (the visibility timeout, an hour by default) so the redelivered task sends it.
SENDING_S = 60.0


class WebhookLedger:
    def __init__(self, client: redis.Redis, ttl_s: int, sending_s: float = SENDING_S) -> None:
        self.client = client
        self.ttl_s = int(ttl_s)
        self.sending_s = sending_s
        self._unlock = client.register_script(_UNLOCK)

    def enqueue_once(self, celery_app: Any, request_id: str, event: str) -> bool:
        """Send the delivery task for (job, event) unless it was sent before; True when sent now.

        The marker is taken before sending and given back if sending fails, so a broker error
        leaves the event deliverable by the next finisher (e.g. the redelivered GPU task).
        """
        key = ENQUEUED_KEY.format(request_id, event)
        if not self.client.set(key, "1", nx=True, px=max(1, int(self.sending_s * 1000))):
            return False
        try:
            from shared.tracing import trace_headers

            # the delivery continues the job's trace (empty headers when tracing is off)
            celery_app.send_task(DELIVER_WEBHOOK_TASK, args=[request_id, event], queue=IO_QUEUE,
                                 headers=trace_headers())
        except Exception:
            self.client.delete(key)
            raise
        # sent: from now on the marker keeps later finishers from sending again for the job's life.
        # (Killed right here, the marker expires and a redelivered finisher sends a second task;
        # the delivered marker still stops a second delivery after a 2xx.)
        self.client.expire(key, self.ttl_s)
        return True

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

    def forget(self, request_id: str) -> None:
        """Drop every marker of a job (purge)."""
        for pattern in (ENQUEUED_KEY, LOCK_KEY, DELIVERED_KEY):
            keys = list(self.client.scan_iter(match=pattern.format(request_id, "*"), count=100))
            if keys:
                self.client.delete(*keys)
