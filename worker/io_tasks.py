"""Celery tasks of the ``io`` queue: webhook delivery and the retention sweep. Thin wrappers: they
build their clients once per process and call ``worker.webhooks.delivery`` / ``shared.jobs.retention``.

Delivery retries use Celery's ``self.retry(countdown=...)`` with our own schedule
(``worker.webhooks.schedule``); the attempt count lives on the job record, not in Celery, so a
redelivered or duplicated task continues the same schedule instead of starting a new one.

Example (what ``shared.jobs.end`` does)::

    celery.send_task(DELIVER_WEBHOOK_TASK, args=[request_id, "succeeded"], queue=IO_QUEUE)
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import shared_task

from shared.queues import DELIVER_WEBHOOK_TASK, IO_QUEUE, SWEEP_TASK

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def delivery_deps() -> Any:
    from shared.deployment import public_api_base
    from worker.clients import process_clients
    from worker.metrics import process_metrics
    from worker.webhooks.delivery import DeliveryDeps
    from worker.webhooks.ledger import DeliveryLedger
    from worker.webhooks.links import webhook_payload_with_links

    c = process_clients()
    settings = c.settings
    base_url = public_api_base(settings)

    def secret_for(record: Any) -> str | None:
        if record.owner:
            key = c.keys.get(record.owner)
            return key.webhook_secret if key is not None else None
        return settings.webhook_secret.get_secret_value() if settings.webhook_secret else None

    return DeliveryDeps(
        settings=settings, store=c.store, ledger=DeliveryLedger(c.store.client, settings.job_retention_s),
        payload_for=lambda record: webhook_payload_with_links(record, base_url, c.storage, settings),
        secret_for=secret_for,
        on_outcome=process_metrics().webhook_outcome,
    )


@shared_task(name=DELIVER_WEBHOOK_TASK, queue=IO_QUEUE, bind=True, ignore_result=True, max_retries=None)
def deliver_webhook(self: Any, request_id: str, event: str) -> str | None:
    """One delivery attempt; schedules the next one itself when the failure is retryable."""
    from shared.structured_logs import bind_request_id
    from shared.tracing import span, task_headers
    from worker.webhooks.delivery import attempt_delivery
    from worker.webhooks.schedule import Outcome

    with bind_request_id(request_id), span("idbody.webhook", carrier=task_headers(self), request_id=request_id,
                                           event=event):
        report = attempt_delivery(delivery_deps(), request_id, event)
        outcome = report.outcome.value if report.outcome else None
        log.info("webhook %s/%s attempt %d: %s%s", request_id, event, report.attempt, outcome or "skipped",
                 f" ({report.reason})" if report.reason else "",
                 extra={"event": "webhook.attempt", "status": event, "attempt": report.attempt,
                        "outcome": outcome or "skipped"})
    if report.outcome is Outcome.RETRY:
        raise self.retry(countdown=report.retry_in_s)
    return outcome


@shared_task(name=SWEEP_TASK, queue=IO_QUEUE, ignore_result=True)
def sweep() -> dict[str, int]:
    """Delete uploads and results past their retention (run by beat every sweep_interval_s)."""
    from worker.clients import process_clients

    report = process_clients().retention.sweep()
    return {"uploads": report.uploads, "results": report.results}
