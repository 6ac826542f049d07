"""Celery tasks: thin wrappers that load state by id and call ``worker.jobs.runner``.

Example (what the gateway does, without importing this module)::

    celery.send_task(GENERATE_TASK, args=[request_id], queue=GPU_QUEUE)
"""

from __future__ import annotations

from celery import shared_task

from shared.queues import GENERATE_TASK, GPU_QUEUE


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
    from worker.clients import process_clients
    from worker.identity_pipeline import get_identity_pipeline
    from worker.jobs.runner import fail_job, run_job

    clients = process_clients()
    store, storage, settings = clients.store, clients.storage, clients.settings
    try:
        pipeline = get_identity_pipeline(settings).load_models()  # loaded by the start hook: returns at once
    except Exception as exc:  # e.g. models_missing: the job fails with that code instead of hanging
        _after_end(request_id, fail_job(store, request_id, exc))
        return
    from worker.jobs.heartbeat import holding
    from worker.metrics import process_metrics

    # the job's lease is renewed by this process's heartbeat while it runs (shared.jobs.reaper)
    with holding(request_id), process_metrics().generation():
        finished = run_job(request_id, pipeline, store, storage, deadline_s=settings.task_soft_time_limit_s,
                           retry_window_s=settings.transient_retry_window_s)
    _after_end(request_id, finished)


def _after_end(request_id: str, finished) -> None:
    """Webhook, retention, key slot: once the job has ended. A redelivered task that found the job
    already ended runs the (idempotent) steps again without counting it twice, so a worker that died
    between finishing the record and enqueueing the webhook still gets its webhook sent."""
    from celery import current_app

    from worker.clients import process_clients

    clients = process_clients()
    record = finished or clients.store.get(request_id)
    if record is None or not record.status.finished:
        return
    clients.job_end(current_app).after_finish(record, count=finished is not None)
