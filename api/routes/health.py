"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import StorageDep, StoreDep
from api.schemas import HealthResponse, ReadyResponse
from shared.jobs.store import WORKER_KEY, JobStore
from shared.storage import Storage

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz", response_model=HealthResponse, summary="The process is up and its event loop answers")
async def healthz() -> dict[str, str]:
    # async on purpose: it runs on the event loop, so a wedged loop fails the liveness probe (a sync
    # route would answer from the threadpool); it touches no Redis, so an outage never restarts pods
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Redis and S3 reachable and at least one worker with a loaded pipeline",
    responses={503: {"model": ReadyResponse, "description": "A check failed; `failed` names it.",
                     "content": {"application/json": {"example": ReadyResponse.model_config["json_schema_extra"]["examples"][1]}}}},
)
def readyz(request: Request, store: StoreDep, storage: StorageDep) -> JSONResponse:
    body = readiness(store, storage, request.app.state)
    return JSONResponse(body, status_code=200 if not body["failed"] else 503)


def readiness(store: JobStore, storage: Storage, state) -> dict:
    """Run the checks. Buckets are (re)ensured here if the start-up attempt found S3 down."""
    redis_ok = store.ping()
    if not getattr(state, "buckets_ready", True):
        state.buckets_ready = ensure_buckets_logged(storage)
    s3_ok = storage.ping()
    ready_workers = 0
    if redis_ok:
        # a heartbeat means the pipeline is loaded unless the worker says otherwise
        ready_workers = sum(1 for w in fresh_workers(store) if w.get("pipeline_loaded", True))
    checks = {"redis": redis_ok, "s3": s3_ok, "workers": ready_workers > 0}
    failed = [name for name, ok in checks.items() if not ok]
    return {"status": "not_ready" if failed else "ready", "checks": checks, "workers": ready_workers,
            "failed": failed}


def fresh_workers(store: JobStore) -> list[dict]:
    """Workers whose last beat is at most three beat intervals old. A worker's key lives its whole
    ttl (30 s) after the last beat, which would count a SIGKILLed worker for that long; the age is
    read from the key's remaining time to live, on Redis's clock, so clock skew between hosts does
    not matter."""
    workers = store.live_workers()
    if not workers:
        return []
    pipe = store.client.pipeline(transaction=False)
    for worker in workers:
        pipe.pttl(WORKER_KEY.format(worker["worker_id"]))
    fresh = []
    for worker, left_ms in zip(workers, pipe.execute()):
        ttl_s, interval_s = worker.get("ttl_s"), worker.get("interval_s")
        if ttl_s is None or interval_s is None:  # a worker from before beats carried their timing
            fresh.append(worker)
        elif left_ms > 0 and ttl_s - left_ms / 1000 <= 3 * float(interval_s):
            fresh.append(worker)
    return fresh


def ensure_buckets_logged(storage: Storage) -> bool:
    try:
        storage.ensure_buckets()
        return True
    except Exception as exc:  # S3 down at start: readiness says so and retries
        log.error("could not ensure buckets %s, %s: %s", storage.uploads_bucket, storage.results_bucket, exc)
        return False
