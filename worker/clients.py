"""The clients a worker process talks to Redis/Valkey, S3 and Celery with: built once per process
(on first use, never at import) and shared by the GPU task, the io tasks and the start hook.

Example::

    clients = process_clients()
    clients.store.get(request_id); clients.storage.get_upload(key)
    clients.job_end.after_finish(record)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from shared.access.api_keys import ApiKeyStore
from shared.jobs.end import JobEnd
from shared.jobs.retention import Retention
from shared.jobs.store import JobStore
from shared.settings import Settings, get_settings
from shared.storage import Storage


@dataclass
class WorkerClients:
    settings: Settings
    store: JobStore
    storage: Storage

    @cached_property
    def keys(self) -> ApiKeyStore:
        return ApiKeyStore(self.store.client)

    @cached_property
    def retention(self) -> Retention:
        return Retention.from_settings(self.settings, self.storage, self.store)

    def job_end(self, celery: Any) -> JobEnd:
        return JobEnd.from_settings(self.settings, celery, self.storage, self.store)


@lru_cache(maxsize=1)
def process_clients() -> WorkerClients:
    """This process's clients (the settings singleton's Redis and S3 endpoints)."""
    settings = get_settings()
    return WorkerClients(settings=settings, store=JobStore.from_settings(settings),
                         storage=Storage.from_settings(settings))
