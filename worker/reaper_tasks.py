"""The beat task that requeues running jobs whose worker died (``shared.job_reaper``). It runs on
the ``io`` queue, where beat lives, never on a GPU worker that may itself be the dead one.

Example (what beat sends every ``reaper_interval_s``)::

    celery.send_task(REAP_TASK, queue=IO_QUEUE)
"""

from __future__ import annotations

from functools import lru_cache

from celery import current_app, shared_task

from shared.queues import IO_QUEUE, REAP_TASK
from shared.settings import get_settings


@lru_cache(maxsize=1)
def _store():
    from shared.job_store import JobStore

    return JobStore.from_settings(get_settings())


@shared_task(name=REAP_TASK, queue=IO_QUEUE, ignore_result=True)
def reap_orphans() -> list[str]:
    """Requeue running jobs without a live lease; returns their request ids."""
    from shared.job_reaper import JobReaper

    return JobReaper(_store(), current_app).reap()
