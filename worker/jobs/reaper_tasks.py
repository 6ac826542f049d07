"""The beat task that requeues running jobs whose worker died (``shared.jobs.reaper``). It runs on
the ``io`` queue, where beat lives, never on a GPU worker that may itself be the dead one.

Example (what beat sends every ``reaper_interval_s``)::

    celery.send_task(REAP_TASK, queue=IO_QUEUE)
"""

from __future__ import annotations

from celery import current_app, shared_task

from shared.queues import IO_QUEUE, REAP_TASK


@shared_task(name=REAP_TASK, queue=IO_QUEUE, ignore_result=True)
def reap_orphans() -> list[str]:
    """Requeue running jobs without a live lease; returns their request ids."""
    from shared.jobs.reaper import JobReaper
    from worker.clients import process_clients

    return JobReaper(process_clients().store, current_app).reap()
