"""What happens once a job has ended (succeeded, failed or canceled), wherever it ended: the GPU
worker's ``finish_job`` and the gateway's cancel both call ``JobEnd.after_finish``.

1. the webhook delivery task is enqueued on ``io`` once per (job, final status) (``WebhookAnnouncer``;
   what happens to it then, attempts and the delivered marker, is ``worker.webhooks``' business);
2. the face upload is deleted (or scheduled, see ``shared.jobs.retention``) and the results' expiry set;
3. the API key's unfinished-job slot is given back;
4. the end is counted for ``/metrics``.

Every step is idempotent, so calling it again for the same ended job (a redelivered GPU task that
found the job finished) repairs a step a crash skipped and repeats nothing — pass ``count=False``
then, so the metric is not counted twice.

Example::

    JobEnd.from_settings(settings, celery_app, storage, store).after_finish(record)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from shared.access.rate_limit import RateLimiter
from shared.jobs.record import JobRecord
from shared.jobs.retention import Retention
from shared.jobs.store import JobStore
from shared.queues import DELIVER_WEBHOOK_TASK, IO_QUEUE
from shared.storage import Storage

log = logging.getLogger(__name__)

FINISHED_COUNTS = "stats:jobs-finished"  # hash: final status -> jobs that ended so
ANNOUNCED_KEY = "webhook:enqueued:{}:{}"  # (request_id, final status); matches retention.WEBHOOK_MARKERS

# How long the announce marker lives while the send is in flight. A finisher killed between taking
# the marker and sending leaves it behind; it must expire well before the broker redelivers that
# finisher's task (the visibility timeout, an hour by default) so the redelivered task sends it.
SENDING_S = 60.0


class WebhookAnnouncer:
    """Sends the webhook delivery task once per (job, final status), however often the job's end is
    run (a redelivered GPU task that found its job finished runs it again)."""

    def __init__(self, client: redis.Redis, ttl_s: int, sending_s: float = SENDING_S) -> None:
        self.client = client
        self.ttl_s = int(ttl_s)
        self.sending_s = sending_s

    def send_once(self, celery_app: Any, request_id: str, event: str) -> bool:
        """Send the delivery task unless it was sent before; True when sent now.

        The marker is taken before sending and given back if sending fails, so a broker error
        leaves the event deliverable by the next finisher (e.g. the redelivered GPU task).
        """
        key = ANNOUNCED_KEY.format(request_id, event)
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
        # the delivery ledger's delivered marker still stops a second delivery after a 2xx.)
        self.client.expire(key, self.ttl_s)
        return True


@dataclass
class JobEnd:
    client: redis.Redis
    celery: Any
    announcer: WebhookAnnouncer
    retention: Retention
    limiter: RateLimiter

    @classmethod
    def from_settings(cls, settings: Any, celery: Any, storage: Storage, store: JobStore) -> "JobEnd":
        client = store.client
        return cls(
            client=client,
            celery=celery,
            announcer=WebhookAnnouncer(client, settings.job_retention_s),
            retention=Retention.from_settings(settings, storage, store),
            limiter=RateLimiter(client, stale_after_s=settings.job_retention_s),
        )

    def after_finish(self, record: JobRecord, count: bool = True) -> None:
        """Run every end-of-job step; a failing step is logged and does not stop the others."""
        if not record.status.finished:
            raise ValueError(f"job {record.request_id} is {record.status.value}, not finished")
        steps = [
            ("webhook", self._enqueue_webhook),
            ("retention", self.retention.job_finished),
            ("key slot", self._release_slot),
        ]
        if count:
            steps.append(("count", self._count))
        for name, step in steps:
            try:
                step(record)
            except (redis.RedisError, OSError) as exc:
                log.error("job %s: end step %s failed: %s", record.request_id, name, type(exc).__name__)
            except Exception as exc:  # boto3/kombu raise their own types; a step must not stop the rest
                log.error("job %s: end step %s failed: %s: %s", record.request_id, name, type(exc).__name__, exc)

    def _enqueue_webhook(self, record: JobRecord) -> None:
        if record.webhook_url:
            self.announcer.send_once(self.celery, record.request_id, record.status.value)

    def _release_slot(self, record: JobRecord) -> None:
        if record.owner:
            self.limiter.release_job_slot(record.owner, record.request_id)

    def _count(self, record: JobRecord) -> None:
        self.client.hincrby(FINISHED_COUNTS, record.status.value, 1)
