"""Readiness published by a GPU worker: a daemon thread writes ``JobStore.heartbeat_worker`` every
few seconds so ``/readyz`` and ``idbody worker ready`` see a loaded pipeline on a live process.

Example::

    beat = Heartbeat(store, pipeline.worker_id, pipeline.info(), ttl_s=30)
    beat.start()
    ...
    beat.stop()
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, store: Any, worker_id: str, info: dict[str, Any], ttl_s: int) -> None:
        self.store = store
        self.worker_id = worker_id
        self.info = info
        self.ttl_s = ttl_s
        # beat three times per TTL so one slow write never makes a live worker look dead
        self.interval_s = max(1.0, ttl_s / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idbody-heartbeat", daemon=True)

    def beat(self) -> None:
        self.store.heartbeat_worker(self.worker_id, self.info, self.ttl_s)

    def start(self) -> "Heartbeat":
        self.beat()  # the first write is synchronous: readiness is visible when start() returns
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and withdraw the heartbeat, so /readyz stops counting this worker at once
        rather than for up to a ttl after it left."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 1)
        try:
            self.store.forget_worker(self.worker_id)
        except Exception as exc:  # shutting down with Redis gone: the key expires on its own
            log.warning("heartbeat withdrawal failed: %s", type(exc).__name__)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception as exc:  # Redis blips must not kill the thread; the next beat retries
                log.warning("heartbeat write failed: %s", type(exc).__name__)
