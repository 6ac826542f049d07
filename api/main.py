"""The FastAPI application. Clients (Redis, S3, Celery) are created in the lifespan, never at import.

Example::

    uvicorn --factory api.main:create_app
    # or: idbody api --port 8000
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.body_limit import BodyLimit
from api.decode_budget import DecodeBudget
from api.errors import install_error_handlers
from api.job_watch import JobWatcher
from api.metrics import install_metrics
from api.rate_limit_headers import RateLimitHeaders
from api.routes import health, info, jobs
from api.routes.page import install_page
from api.submit import form_files
from shared.deployment import check_deployment
from shared.jobs.store import JobStore
from shared.log_redaction import install_log_redaction
from shared.settings import Settings, get_settings
from shared.storage import Storage
from shared.tracing import setup_tracing

log = logging.getLogger(__name__)

DESCRIPTION = (
    "One face photo in, full-body images that keep the person's identity out. Submit a job, poll "
    "its status (or send `Prefer: wait` / `Prefer: wait=N`, or follow `/api/v1/jobs/{id}/events`), then read "
    'the result. Every error is `{"error": {"code", "message", "field"}}` with a stable code. A web page for '
    "people is served at `/`."
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    setup_tracing(settings, "idbody-api")  # off (and nothing imported) unless IDBODY_OTEL_ENDPOINT is set
    # celery costs ~0.2 s to import; the gateway's import stays light and pays it at start
    from shared.celery_app import make_celery

    # one client of each kind for the process, each pooling as many connections as threads can
    # use it at once (blocking work runs in anyio's default threadpool)
    threads = int(anyio.to_thread.current_default_thread_limiter().total_tokens)
    store = JobStore.from_settings(settings)
    storage = Storage.from_settings(settings, max_pool_connections=threads)
    app.state.store = store
    app.state.storage = storage
    app.state.buckets_ready = await anyio.to_thread.run_sync(health.ensure_buckets_logged, storage)
    app.state.celery = make_celery(settings, broker_pool_limit=threads)
    _keys_limits_retention(app, settings, store, storage)
    app.state.wait_limiter = anyio.CapacityLimiter(settings.max_waiting_requests)
    app.state.job_watcher = JobWatcher(store, settings.max_streams_per_process, settings.max_streams_per_key)
    try:
        yield
    finally:
        await app.state.job_watcher.stop()
        app.state.celery.close()
        store.client.close()


def _keys_limits_retention(app: FastAPI, settings: Settings, store: JobStore, storage: Storage) -> None:
    from api.admission import Admission
    from api.submit import SubmitContext
    from shared.access.api_keys import ApiKeyStore
    from shared.access.idempotency import IdempotencyStore
    from shared.access.rate_limit import RateLimiter
    from shared.jobs.end import JobEnd

    app.state.api_keys = ApiKeyStore(store.client)
    app.state.rate_limiter = RateLimiter(store.client, stale_after_s=settings.job_retention_s)
    app.state.job_end = JobEnd.from_settings(settings, app.state.celery, storage, store)
    app.state.admission = Admission(
        settings=settings, store=store, limiter=app.state.rate_limiter,
        idempotency=IdempotencyStore(store.client, settings.idempotency_ttl_s),
        retention=app.state.job_end.retention,
    )
    # the bound on the gateway's decode memory (api.decode_budget)
    app.state.submit = SubmitContext(settings=settings, store=store, storage=storage, celery=app.state.celery,
                                     admission=app.state.admission,
                                     decode_budget=DecodeBudget(settings.max_concurrent_decodes * settings.max_decode_bytes))
    app.state.metrics.bind_store(store)
    if settings.auth_disabled:
        log.warning("auth_disabled is set: requests without an API key are accepted (development only)")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ``settings`` defaults to the environment's (``IDBODY_*``)."""
    app = FastAPI(
        title="identity-body",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings = settings or get_settings()
    check_deployment(settings)  # a container without its public URL does not start
    install_error_handlers(app)
    app.add_middleware(RateLimitHeaders)
    _install_cors(app, app.state.settings)
    app.add_middleware(BodyLimit, submit_path=jobs.SUBMIT_PATH, submit_max_bytes=settings.max_upload_bytes,
                       submit_files=form_files(),
                       read_timeout_s=settings.body_read_timeout_s)
    install_metrics(app)
    install_log_redaction()
    app.include_router(jobs.router)
    app.include_router(info.router)
    app.include_router(health.router)
    install_page(app)
    return app


def operation_id(route: APIRoute) -> str:
    """OpenAPI operationId: the route function's name (``job_status``), which generated clients
    turn into method names, instead of FastAPI's default name + path + method."""
    return route.name


# headers a browser page on another origin may read from our answers (CORS hides the rest)
EXPOSED_HEADERS = ("Location", "Retry-After", "Preference-Applied", "Idempotent-Replayed",
                   "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def _install_cors(app: FastAPI, settings: Settings) -> None:
    """CORS for ``settings.cors_origins`` only; off (no CORS headers at all) when empty."""
    if not settings.cors_origins:
        return
    from fastapi.middleware.cors import CORSMiddleware

    app.add_middleware(
        CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Prefer", "Idempotency-Key"],
        expose_headers=list(EXPOSED_HEADERS), max_age=600,
    )
