"""Webhook delivery against real Valkey and a real HTTP receiver on loopback."""

import threading
import time
import uuid

import pytest
from standardwebhooks.webhooks import Webhook

from shared.access.api_keys import new_webhook_secret
from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.store import JobStore
from shared.url_guard import WebhookResolutionError
from tests.webhook_receiver import Receiver
from worker.webhooks.delivery import DeliveryDeps, attempt_delivery
from worker.webhooks.ledger import DeliveryLedger
from worker.webhooks.schedule import Outcome

SECRET = new_webhook_secret()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def wh_settings(settings):
    return settings.model_copy(update={
        "webhook_allow_hosts": ["127.0.0.1"], "webhook_backoff_base_s": 0.0, "webhook_max_attempts": 4,
        "webhook_timeout_s": 5.0,
    })


def _deps(settings, redis_client, resolver=None, outcomes=None):
    store = JobStore(redis_client, settings.job_retention_s)
    extra = {} if resolver is None else {"resolver": resolver}
    return DeliveryDeps(
        settings=settings, store=store, ledger=DeliveryLedger(redis_client, settings.job_retention_s),
        payload_for=lambda r: {"request_id": r.request_id, "status": r.status.value},
        secret_for=lambda r: SECRET,
        on_outcome=(outcomes.append if outcomes is not None else (lambda o: None)), **extra,
    )


def _finished_job(deps, url, status=JobStatus.SUCCEEDED) -> str:
    rid = uuid.uuid4().hex
    deps.store.create(JobRecord(request_id=rid, created_at=time.time(), webhook_url=url))
    deps.store.transition(rid, JobStatus.RUNNING, worker="w")
    deps.store.transition(rid, status)
    return rid


def _deliver_until_done(deps, rid, event):
    reports = []
    while True:
        report = attempt_delivery(deps, rid, event)
        reports.append(report)
        if report.outcome is not Outcome.RETRY:
            return reports
        assert report.retry_in_s == 0.0  # base 0 in these tests: no waiting


def test_fails_twice_then_succeeds_exactly_one_delivery(wh_settings, redis_client, receiver):
    receiver.script = [503, (429, {"retry-after": "0"}), 200]
    outcomes = []
    deps = _deps(wh_settings, redis_client, outcomes=outcomes)
    rid = _finished_job(deps, receiver.url())
    reports = _deliver_until_done(deps, rid, "succeeded")
    assert [r.outcome for r in reports] == [Outcome.RETRY, Outcome.RETRY, Outcome.DELIVERED]
    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.DELIVERED]
    # a redelivered task, or a second one, must not post again
    assert attempt_delivery(deps, rid, "succeeded").outcome is None
    assert len(receiver.requests) == 3
    attempts = deps.store.get(rid).webhook_attempts
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 503), (2, 429), (3, 200)]
    assert all(a.at > 0 and a.error is None for a in attempts)
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert ids == {f"{rid}_succeeded"}  # the same id on every retry


def test_receiver_verifies_signature_with_the_package(wh_settings, redis_client, receiver):
    deps = _deps(wh_settings, redis_client)
    rid = _finished_job(deps, receiver.url(), JobStatus.FAILED)
    assert attempt_delivery(deps, rid, "failed").outcome is Outcome.DELIVERED
    got = receiver.requests[0]
    assert Webhook(SECRET).verify(got.body, got.headers) == {"request_id": rid, "status": "failed"}


def test_410_is_not_retried(wh_settings, redis_client, receiver):
    receiver.script = [410]
    deps = _deps(wh_settings, redis_client)
    rid = _finished_job(deps, receiver.url())
    reports = _deliver_until_done(deps, rid, "succeeded")
    assert [r.outcome for r in reports] == [Outcome.REJECTED]
    assert len(receiver.requests) == 1
    assert [a.status_code for a in deps.store.get(rid).webhook_attempts] == [410]


def test_attempts_are_bounded(wh_settings, redis_client, receiver):
    receiver.script = [500]
    deps = _deps(wh_settings, redis_client)
    rid = _finished_job(deps, receiver.url())
    reports = _deliver_until_done(deps, rid, "succeeded")
    assert reports[-1].outcome is Outcome.EXHAUSTED and len(reports) == 4
    assert len(receiver.requests) == 4
    assert attempt_delivery(deps, rid, "succeeded").outcome is Outcome.EXHAUSTED
    assert len(receiver.requests) == 4


def test_loopback_refused_at_delivery_without_connecting(settings, redis_client, receiver):
    # not allow-listed: the guard refuses before any socket is opened
    deps = _deps(settings.model_copy(update={"webhook_backoff_base_s": 0.0}), redis_client)
    for host in ("127.0.0.1", "[::ffff:127.0.0.1]", "localhost"):
        rid = _finished_job(deps, receiver.url(host=host))
        report = attempt_delivery(deps, rid, "succeeded")
        assert report.outcome is Outcome.REFUSED, host
        assert deps.store.get(rid).webhook_attempts[0].error.startswith("refused")
    assert receiver.connections == 0


def test_hostname_resolving_private_refused_dns_failure_retried(wh_settings, redis_client, receiver):
    table = {"rebind.example": ["10.0.0.7"]}

    def resolver(host, port):
        if host not in table:
            raise WebhookResolutionError(host)
        return table[host]

    deps = _deps(wh_settings, redis_client, resolver=resolver)
    rid = _finished_job(deps, f"http://rebind.example:{receiver.port}/hook")
    assert attempt_delivery(deps, rid, "succeeded").outcome is Outcome.REFUSED
    rid = _finished_job(deps, "http://gone.example/hook")
    assert attempt_delivery(deps, rid, "succeeded").outcome is Outcome.RETRY
    assert receiver.connections == 0


def test_redirect_to_loopback_is_not_followed(wh_settings, redis_client, receiver):
    target = Receiver()
    try:
        receiver.script = [(307, {"location": target.url(host="localhost")})]
        deps = _deps(wh_settings, redis_client)
        rid = _finished_job(deps, receiver.url())
        assert attempt_delivery(deps, rid, "succeeded").outcome is Outcome.REJECTED
        assert target.connections == 0
    finally:
        target.close()


def test_attempt_in_flight_elsewhere_is_skipped(wh_settings, redis_client, receiver):
    deps = _deps(wh_settings, redis_client)
    rid = _finished_job(deps, receiver.url())
    token = deps.ledger.lock(rid, "succeeded", hold_s=30)
    assert attempt_delivery(deps, rid, "succeeded").outcome is None
    deps.ledger.unlock(rid, "succeeded", token)
    assert attempt_delivery(deps, rid, "succeeded").outcome is Outcome.DELIVERED
    assert len(receiver.requests) == 1


def test_receiver_slower_than_the_timeout_gets_the_event_at_most_twice(wh_settings, redis_client):
    # the receiver reads each request whole and never answers in time: it may have processed
    # it, so delivery stops after webhook_max_unconfirmed_attempts instead of webhook_max_attempts
    settings = wh_settings.model_copy(update={"webhook_timeout_s": 0.5, "webhook_max_attempts": 8})
    slow = Receiver(stall=threading.Event())
    try:
        deps = _deps(settings, redis_client)
        rid = _finished_job(deps, slow.url())
        reports = _deliver_until_done(deps, rid, "succeeded")
        assert [r.outcome for r in reports] == [Outcome.RETRY, Outcome.EXHAUSTED]
        assert "may have processed it" in reports[-1].reason
        assert len(slow.requests) == settings.webhook_max_unconfirmed_attempts == 2
        assert {r.headers["webhook-id"] for r in slow.requests} == {f"{rid}_succeeded"}
    finally:
        slow.stall.set()
        slow.close()
