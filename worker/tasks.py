"""Celery tasks: thin wrappers that load state by id and call ``worker.job_runner``.

Example (what the gateway does, without importing this module)::

    celery.send_task(GENERATE_TASK, args=[request_id], queue=GPU_QUEUE)
"""

from __future__ import annotations

from functools import lru_cache

from celery import shared_task

from shared.queues import GENERATE_TASK, GPU_QUEUE
from shared.settings import get_settings


@lru_cache(maxsize=1)
def _clients():
    from shared.job_store import JobStore
    from shared.storage import Storage

    settings = get_settings()
    return JobStore.from_settings(settings), Storage.from_settings(settings)


@shared_task(name=GENERATE_TASK, queue=GPU_QUEUE, ignore_result=True)
def generate(request_id: str) -> None:
    """Run one generation job on the resident pipeline. Job failures end in the record, never here."""
    from celery import current_task

    from shared.structured_logs import bind_request_id
    from shared.tracing import span, task_headers

    # every line of this job carries its id; the span continues the submit's trace (if tracing is on)
    with bind_request_id(request_id), span("idbody.generate", carrier=task_headers(current_task),
                                           request_id=request_id):
        _generate(request_id)


def _generate(request_id: str) -> None:
    from worker.job_runner import fail_job, run_job
    from worker.pipeline_host import PipelineHost

    settings = get_settings()
    store, storage = _clients()
    try:
        host = PipelineHost.load(settings)  # loaded by the start hook; this only returns it
    except Exception as exc:  # e.g. models_missing: the job fails with that code instead of hanging
        _after_end(request_id, fail_job(store, request_id, exc))
        return
    from worker.metrics import process_metrics

    with process_metrics().generation():
        finished = run_job(request_id, host.pipeline, store, storage, deadline_s=settings.task_soft_time_limit_s)
    _after_end(request_id, finished)


def _after_end(request_id: str, finished) -> None:
    """Webhook, retention, key slot: once the job has ended. A redelivered task that found the job
    already ended runs the (idempotent) steps again without counting it twice, so a worker that died
    between finishing the record and enqueueing the webhook still gets its webhook sent."""
    from celery import current_app

    from shared.job_end import JobEnd

    store, storage = _clients()
    record = finished or store.get(request_id)
    if record is None or not record.status.finished:
        return
    JobEnd.from_settings(get_settings(), current_app, storage, store).after_finish(record, count=finished is not None)
