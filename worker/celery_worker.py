"""The worker's Celery app, built from settings, and its start hook. ``celery -A worker.celery_worker``
(or ``idbody worker``) runs it. Importing this module does no heavy work: the pipeline is loaded by
``worker_init`` (the worker's own process, before it consumes: the solo and threads pools run
tasks there) on workers that consume the ``gpu`` queue, then warmed up, then readiness is
published by a heartbeat thread. A gpu worker with several pool threads (micro-batching,
``worker.engine.micro_batcher``) lets their jobs share denoise passes.

Example::

    celery -A worker.celery_worker worker -Q gpu --pool solo --prefetch-multiplier 1
"""

from __future__ import annotations

import logging

from celery import signals

from shared.celery_app import make_celery
from shared.queues import GPU_QUEUE
from shared.settings import get_settings

log = logging.getLogger(__name__)

app = make_celery(get_settings())
app.conf.include = ["worker.jobs.tasks", "worker.io_tasks", "worker.jobs.reaper_tasks"]

_heartbeat = None


def consumes_gpu_queue() -> bool:
    return GPU_QUEUE in set(app.amqp.queues.consume_from or ())


@signals.setup_logging.connect
def _logging(**_: object) -> None:
    """Our JSON/text configuration instead of Celery's own (a receiver here stops Celery's)."""
    from shared.structured_logs import configure_logging

    configure_logging(get_settings())


@signals.worker_init.connect
def _observability(**_: object) -> None:
    """Log redaction for every record of this process; the metrics port when configured."""
    from shared.log_redaction import install_log_redaction
    from worker.metrics import process_metrics

    install_log_redaction()
    settings = get_settings()
    from shared.tracing import setup_tracing

    setup_tracing(settings, "idbody-worker")  # off unless IDBODY_OTEL_ENDPOINT is set
    if settings.worker_metrics_port is not None:
        port = process_metrics().serve(settings.worker_metrics_port, settings.worker_metrics_host)
        log.info("worker metrics on http://%s:%d/metrics", settings.worker_metrics_host, port)


@signals.worker_init.connect
def _load_pipeline(**_: object) -> None:
    """Load, warm up, then publish readiness: a worker is counted only once it can serve."""
    global _heartbeat
    if not consumes_gpu_queue() or _heartbeat is not None:
        return
    from worker.clients import process_clients
    from worker.identity_pipeline import get_identity_pipeline
    from worker.jobs.heartbeat import Heartbeat, worker_info
    from worker.metrics import process_metrics

    clients = process_clients()
    metrics = process_metrics()
    pipeline = get_identity_pipeline(clients.settings).load_models().warm_up()
    pipeline.enable_micro_batching(on_pass=metrics.micro_batch_pass)
    metrics.model_load_seconds.set(pipeline.load_s)
    _heartbeat = Heartbeat(clients.store, pipeline.worker_id, worker_info(pipeline),
                           clients.settings.worker_heartbeat_ttl_s).start()
    log.info("worker %s ready (profile %s)", pipeline.worker_id, pipeline.profile)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _stop_heartbeat(**_: object) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
