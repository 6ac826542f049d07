"""Retry one step of a job while Redis or S3 is unreachable, instead of failing the job.

Only failures ``shared.transient.is_transient`` recognises are retried, with exponential backoff
(0.5 s doubling to 10 s) for up to ``window_s``; every other error goes straight to the caller, so
a bad image or a missing face still fails the job at once. While it waits, the job record carries
a note (``retrying: the image store is unreachable``) when Redis can take it, cleared once the
step went through. The job stays ``queued`` or ``running`` all along, and its worker keeps renewing
the job's lease, so the reaper leaves it alone.

Example::

    retry = TransientRetry(store, request_id, window_s=900)
    data = retry.call("the image store", storage.get_upload, record.upload_key)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from shared.transient import is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0


class TransientRetry:
    def __init__(self, store: Any, request_id: str, window_s: float,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.request_id = request_id
        self.window_s = float(window_s)
        self.sleep = sleep
        self.retries = 0  # total waits, over every step of this job
        self._noted = False

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried while it fails transiently; ``what`` names the
        dependency for the note and the log."""
        deadline = time.monotonic() + self.window_s
        delay = FIRST_DELAY_S
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                self.retries += 1
                log.warning("job %s: %s is unreachable (%s); retrying in %.1f s",
                            self.request_id, what, type(exc).__name__, delay)
                self._note(f"retrying: {what} is unreachable")
                self.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            if self._noted:
                self._note(None)
            return result

    def _note(self, note: str | None) -> None:
        try:
            written = self.store.update(self.request_id, note=note)
        except (redis.RedisError, RuntimeError) as exc:  # Redis is the thing that is down
            log.debug("job %s: note not written: %s", self.request_id, type(exc).__name__)
            return
        self._noted = written is not None and note is not None
