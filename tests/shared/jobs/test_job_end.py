"""The job's end announces its webhook once per (job, final status), whoever runs the end and
however often: the GPU worker, its redelivered task, the gateway's cancel."""

import pytest

from idbody.stack.polling import until
from shared.celery_app import make_celery
from shared.jobs.end import WebhookAnnouncer


def test_send_once_per_job_and_event(settings, redis_client):
    app = make_celery(settings)
    announcer = WebhookAnnouncer(redis_client, 600)
    assert announcer.send_once(app, "r1", "succeeded") is True
    assert announcer.send_once(app, "r1", "succeeded") is False  # the redelivered GPU task
    assert announcer.send_once(app, "r1", "canceled") is True
    assert redis_client.llen("io") == 2  # what the broker holds for the io queue


class _BrokerDown:
    def send_task(self, *args: object, **kwargs: object) -> None:
        raise ConnectionError("broker unreachable")


def test_a_failed_send_leaves_the_event_to_the_next_finisher(settings, redis_client):
    announcer = WebhookAnnouncer(redis_client, 600)
    with pytest.raises(ConnectionError):
        announcer.send_once(_BrokerDown(), "r3", "failed")
    assert announcer.send_once(make_celery(settings), "r3", "failed") is True
    assert redis_client.llen("io") == 1


class _KilledWhileSending:
    """A Celery app whose process dies inside send_task (BaseException: no handler runs)."""

    def send_task(self, *args: object, **kwargs: object) -> None:
        raise SystemExit(137)


def test_a_finisher_killed_while_sending_leaves_the_event_to_the_next_one(settings, redis_client):
    announcer = WebhookAnnouncer(redis_client, 600, sending_s=0.3)
    with pytest.raises(SystemExit):
        announcer.send_once(_KilledWhileSending(), "r2", "succeeded")
    assert redis_client.exists("webhook:enqueued:r2:succeeded")  # left behind, as a crash would
    app = make_celery(settings)
    # the marker blocks only while a send could still be in flight, then the redelivered task sends
    assert announcer.send_once(app, "r2", "succeeded") is False
    until(lambda: announcer.send_once(app, "r2", "succeeded"), 5, "the in-flight marker to expire")
    assert redis_client.llen("io") == 1
    # once sent, the marker lasts the job's life
    assert 590 < redis_client.ttl("webhook:enqueued:r2:succeeded") <= 600
