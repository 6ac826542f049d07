"""The Celery application and its whole configuration, in one module. Tasks are registered by
``worker.jobs.tasks``; the gateway only needs ``send_task`` and so never imports the worker.

Example::

    app = make_celery(get_settings())
    app.send_task(GENERATE_TASK, args=[request_id], queue=GPU_QUEUE)
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from celery import Celery
from kombu import Queue

from shared.queues import (
    DELIVER_WEBHOOK_TASK,
    GENERATE_TASK,
    GPU_QUEUE,
    IO_QUEUE,
    REAP_TASK,
    SWEEP_TASK,
)
from shared.settings import Settings


def broker_transport_options(visibility_timeout_s: int) -> dict[str, int]:
    """Redis transport options. kombu sweeps for unacked messages older than the visibility timeout
    only every ``unacked_restore_interval * unacked_restore_throttle`` seconds (100 s by default);
    sweeping at a quarter of the timeout (at most every 10 s, one cheap ZRANGE) makes a task whose
    worker was SIGKILLed come back soon after the timeout instead of minutes later.

    Example::

        broker_transport_options(3600)
        # {'visibility_timeout': 3600, 'unacked_restore_interval': 10, 'unacked_restore_throttle': 1}
    """
    return {
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": max(1, min(10, visibility_timeout_s // 4)),
        "unacked_restore_throttle": 1,
    }


def make_celery(settings: Settings, broker_pool_limit: int = 10) -> Celery:
    """The app; ``broker_pool_limit`` caps its pool of broker connections, which ``send_task``
    borrows and returns (no connection per call). The gateway sizes it to its threadpool so
    concurrent submits never wait for a connection.

    Example::

        make_celery(settings, broker_pool_limit=40).send_task(GENERATE_TASK, args=[rid], queue=GPU_QUEUE)
    """
    if settings.broker_visibility_timeout_s <= settings.task_time_limit_s:
        raise ValueError(
            "broker_visibility_timeout_s must be longer than task_time_limit_s, or a running task "
            "is redelivered to a second worker while the first still works on it"
        )
    app = Celery("identity_body", broker=settings.redis_url)
    app.conf.update(
        # the job record in Redis is the status API; Celery keeps no results
        task_ignore_result=True,
        result_backend=None,
        task_queues=(Queue(GPU_QUEUE), Queue(IO_QUEUE)),
        task_default_queue=IO_QUEUE,
        task_routes={
            GENERATE_TASK: {"queue": GPU_QUEUE},
            DELIVER_WEBHOOK_TASK: {"queue": IO_QUEUE},
            SWEEP_TASK: {"queue": IO_QUEUE},
            REAP_TASK: {"queue": IO_QUEUE},
        },
        # a task is acknowledged only when it finished; a worker that dies mid-job gets its task
        # redelivered, and the job record makes the second run a no-op if the first had finished
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        broker_transport_options=broker_transport_options(settings.broker_visibility_timeout_s),
        broker_connection_retry_on_startup=True,
        broker_pool_limit=broker_pool_limit,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        # the retention sweep and the reaper of dead workers' jobs; run where a worker is started
        # with beat (idbody worker --queues io --beat)
        beat_schedule={
            "retention-sweep": {"task": SWEEP_TASK, "schedule": settings.sweep_interval_s,
                                "options": {"queue": IO_QUEUE, "expires": settings.sweep_interval_s}},
            "reap-orphans": {"task": REAP_TASK, "schedule": settings.reaper_interval_s,
                             "options": {"queue": IO_QUEUE, "expires": settings.reaper_interval_s}},
        },
        beat_schedule_filename=str(beat_schedule_path(settings)),
    )
    return app


def beat_schedule_path(settings: Settings) -> Path:
    """Where beat keeps its schedule: ``beat_schedule_path`` if set, else a file in the temp folder
    named after the Redis URL, so two stacks on one host never share (or lock) one file.

    Example::

        beat_schedule_path(settings)   # /tmp/idbody-celerybeat-3f2a9c1d0e7b
    """
    if settings.beat_schedule_path is not None:
        return settings.beat_schedule_path
    return Path(tempfile.gettempdir()) / f"idbody-celerybeat-{stack_tag(settings.redis_url)}"


def stack_tag(redis_url: str) -> str:
    """What tells one stack's files in a host's temp folder from another's: a digest of the Redis
    URL that every process of a stack shares (beat's schedule, the workers' liveness files).

    Example::

        stack_tag("redis://127.0.0.1:6379/0")   # '3f2a9c1d0e7b'
    """
    return hashlib.sha256(redis_url.encode()).hexdigest()[:12]
