"""Readiness published by a GPU worker: a daemon thread writes ``JobStore.heartbeat_worker`` every
few seconds so ``/readyz`` and ``idbody worker ready`` see a loaded pipeline on a live process.
The same beat renews the lease of every job the process holds: a worker that dies stops renewing,
and ``shared.jobs.reaper`` puts its job back in the queue once the lease runs out.

Example::

    beat = Heartbeat(store, pipeline.worker_id, worker_info(pipeline), ttl_s=30)
    beat.start()
    with holding(request_id):   # in the task: the job's lease is renewed while it runs
        ...
    beat.stop()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

MAX_INTERVAL_S = 2.0

# the process's running heartbeat (one per worker process, between start() and stop())
_active: "Heartbeat | None" = None


def worker_info(pipeline: Any) -> dict[str, Any]:
    """What a worker's heartbeat publishes: the pipeline's info and the memory plan its engine
    runs under (``MemoryPlan.report()``; None before the engine loads)."""
    plan = getattr(pipeline.engine, "memory_plan", None)
    return {**pipeline.info(), "memory_plan": plan.report() if plan is not None else None}


@contextmanager
def holding(request_id: str) -> Iterator[None]:
    """Renew ``request_id``'s lease with every beat while the block runs (no-op without a beat,
    e.g. when a test calls the task body directly)."""
    beat = _active
    if beat is None:
        yield
        return
    with beat._lock:
        beat._held.add(request_id)
    try:
        yield
    finally:
        with beat._lock:
            beat._held.discard(request_id)


class Heartbeat:
    def __init__(self, store: Any, worker_id: str, info: dict[str, Any], ttl_s: int) -> None:
        self.store = store
        self.worker_id = worker_id
        self.info = info
        self.ttl_s = ttl_s
        # beat at least three times per TTL so one slow write never makes a live worker look dead,
        # and at least every 2 s so /readyz (which counts only recent beats) drops a dead one fast
        self.interval_s = max(0.5, min(MAX_INTERVAL_S, ttl_s / 3))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idbody-heartbeat", daemon=True)
        self._lock = threading.Lock()
        self._held: set[str] = set()

    def beat(self) -> None:
        info = {**self.info, "ttl_s": self.ttl_s, "interval_s": self.interval_s}
        self.store.heartbeat_worker(self.worker_id, info, self.ttl_s)
        with self._lock:
            held = sorted(self._held)
        self.store.renew_leases(self.worker_id, held, self.ttl_s)

    def start(self) -> "Heartbeat":
        global _active
        self.beat()  # the first write is synchronous: readiness is visible when start() returns
        self._thread.start()
        _active = self
        return self

    def stop(self) -> None:
        """Stop beating and withdraw the heartbeat, so /readyz stops counting this worker at once
        rather than for up to a ttl after it left."""
        global _active
        if _active is self:
            _active = None
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
