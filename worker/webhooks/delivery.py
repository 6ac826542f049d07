"""Deliver one webhook event of a finished job: one attempt per call, the caller schedules the next.

One attempt:
1. skip if a 2xx was already recorded for (job, event), or another worker has an attempt in flight;
2. check the URL again with the SSRF guard and pin the address it resolves to;
3. POST the job's status JSON, signed per Standard Webhooks (``webhook-id`` is
   ``{request_id}_{event}``, the same on every retry so receivers can de-duplicate);
4. record the attempt on the job record (attempt, time, status code, error);
5. on a 2xx set the delivered marker; on a retryable failure say how long to wait.

A receiver slower than ``webhook_timeout_s`` got the request but did not answer in time: it may
well have processed it, so such *unconfirmed* attempts stop after
``webhook_max_unconfirmed_attempts`` (2) instead of the full ``webhook_max_attempts`` (8): a slow
receiver sees an event at most twice, and dedupes the second by ``webhook-id``. Refused or dropped
connections and 5xx answers still get every attempt.

Runs only on io workers (the Celery task in ``worker.io_tasks`` wraps it).

Example::

    report = attempt_delivery(deps, "3f2a...", "succeeded")
    report.outcome, report.retry_in_s     # (Outcome.RETRY, 7.9)
"""

from __future__ import annotations

import json
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.errors import IdentityBodyError
from shared.jobs.record import JobRecord, WebhookAttempt
from shared.jobs.store import JobStore
from shared.jobs.views import status_view
from shared.settings import Settings
from shared.url_guard import (
    Resolver,
    WebhookResolutionError,
    resolve_webhook_target,
    system_resolver,
)
from worker.webhooks.ledger import DeliveryLedger
from worker.webhooks.pinned_http import HttpAnswer, post_pinned
from worker.webhooks.schedule import Outcome, classify, next_delay, parse_retry_after
from worker.webhooks.signing import sign_webhook


@dataclass
class DeliveryDeps:
    """Everything one attempt touches; tests swap ``resolver`` and ``ssl_context``."""

    settings: Settings
    store: JobStore
    ledger: DeliveryLedger
    payload_for: Callable[[JobRecord], dict[str, Any]]  # the status endpoint's JSON for a record
    secret_for: Callable[[JobRecord], str | None]  # the whsec_ secret of the job's API key
    resolver: Resolver = system_resolver
    ssl_context: ssl.SSLContext | None = None
    rand: Callable[[], float] = random.random
    clock: Callable[[], float] = time.time
    on_outcome: Callable[[Outcome], None] = field(default=lambda outcome: None)


@dataclass(frozen=True)
class AttemptReport:
    outcome: Outcome | None  # None: nothing was attempted (no URL, already delivered, in flight, job gone)
    attempt: int = 0
    retry_in_s: float | None = None
    reason: str | None = None


def webhook_payload(record: JobRecord, base_url: str) -> dict[str, Any]:
    """The webhook body: the status endpoint's JSON, without the delivery attempts themselves
    (they change from one attempt to the next; the event does not)."""
    view = status_view(record, base_url)
    view.pop("webhook_attempts", None)
    return view


def attempt_delivery(deps: DeliveryDeps, request_id: str, event: str) -> AttemptReport:
    """Make at most one delivery attempt of ``event`` for job ``request_id``; never raises for
    receiver or network trouble."""
    if deps.ledger.is_delivered(request_id, event):
        return AttemptReport(None, reason="already delivered")
    record = deps.store.get(request_id)
    if record is None or not record.webhook_url:
        return AttemptReport(None, reason="job gone or no webhook_url")
    if record.status.value != event:
        return AttemptReport(None, reason=f"job is {record.status.value}, not {event}")
    token = deps.ledger.lock(request_id, event, hold_s=deps.settings.webhook_timeout_s + 30)
    if token is None:
        return AttemptReport(None, reason="another attempt is in flight")
    try:
        # re-check under the lock: a 2xx may have landed between the first check and the lock
        if deps.ledger.is_delivered(request_id, event):
            return AttemptReport(None, reason="already delivered")
        report = _attempt_locked(deps, record, event)
    finally:
        deps.ledger.unlock(request_id, event, token)
    deps.on_outcome(report.outcome)
    return report


def _attempt_locked(deps: DeliveryDeps, record: JobRecord, event: str) -> AttemptReport:
    settings = deps.settings
    attempt = len(record.webhook_attempts) + 1
    if attempt > settings.webhook_max_attempts:
        return AttemptReport(Outcome.EXHAUSTED, attempt - 1, reason="attempts used up")
    started = deps.clock()
    answer, refused = _send(deps, record, event)
    _record(deps, record.request_id, WebhookAttempt(
        attempt=attempt, at=started, status_code=answer.status_code, error=answer.error))
    if refused:
        return AttemptReport(Outcome.REFUSED, attempt, reason=answer.error)
    outcome = classify(answer.status_code)
    if outcome is Outcome.DELIVERED:
        deps.ledger.mark_delivered(record.request_id, event)
        return AttemptReport(outcome, attempt)
    if outcome is Outcome.REJECTED:
        return AttemptReport(outcome, attempt, reason=f"receiver answered {answer.status_code}")
    unconfirmed = _unconfirmed_count(record) + 1 if _unconfirmed(answer.error) else 0
    if unconfirmed >= settings.webhook_max_unconfirmed_attempts:
        return AttemptReport(Outcome.EXHAUSTED, attempt, reason=(
            f"the receiver got the request but answered after the {settings.webhook_timeout_s:g} s timeout "
            f"{settings.webhook_max_unconfirmed_attempts} times; not sent again (it may have processed it)"))
    delay = next_delay(
        attempt, settings.webhook_max_attempts, settings.webhook_backoff_base_s, settings.webhook_backoff_cap_s,
        parse_retry_after(answer.retry_after, deps.clock()), deps.rand,
    )
    if delay is None:
        return AttemptReport(Outcome.EXHAUSTED, attempt, reason=answer.error or f"answered {answer.status_code}")
    return AttemptReport(Outcome.RETRY, attempt, retry_in_s=delay, reason=answer.error)


def _unconfirmed(error: str | None) -> bool:
    """The request went out whole and the receiver did not answer in time: it may have processed
    it (a slow receiver), unlike a refused or dropped connection, which surely did not."""
    return bool(error) and error.startswith("ReadTimeout")


def _unconfirmed_count(record: JobRecord) -> int:
    """Unconfirmed attempts before this one."""
    return sum(1 for a in record.webhook_attempts if _unconfirmed(a.error))


def _send(deps: DeliveryDeps, record: JobRecord, event: str) -> tuple[HttpAnswer, bool]:
    """(answer, refused): the URL is checked again here, right before connecting."""
    settings = deps.settings
    try:
        target = resolve_webhook_target(record.webhook_url or "", settings.webhook_allow_hosts, deps.resolver)
    except IdentityBodyError as exc:
        return HttpAnswer(None, error=f"refused: {exc.message}"), True
    except WebhookResolutionError as exc:
        return HttpAnswer(None, error=f"dns: {exc}"[:300]), False
    secret = deps.secret_for(record)
    if not secret:
        return HttpAnswer(None, error="refused: no webhook secret for this job's API key"), True
    body = json.dumps(deps.payload_for(record), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    headers = sign_webhook(secret, f"{record.request_id}_{event}", body, timestamp=int(deps.clock()))
    return post_pinned(target, body, headers, settings.webhook_timeout_s, deps.ssl_context), False


def _record(deps: DeliveryDeps, request_id: str, attempt: WebhookAttempt) -> None:
    deps.store.append_webhook_attempt(request_id, attempt)
