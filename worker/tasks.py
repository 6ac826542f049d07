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
    from worker.job_runner import fail_job, run_job
    from worker.pipeline_host import PipelineHost

    settings = get_settings()
    store, storage = _clients()
    try:
        host = PipelineHost.load(settings)  # loaded by the start hook; this only returns it
    except Exception as exc:  # e.g. models_missing: the job fails with that code instead of hanging
        fail_job(store, request_id, exc)
        return
    run_job(request_id, host.pipeline, store, storage, deadline_s=settings.task_soft_time_limit_s)
