"""Celery queue and task names, in one place so the gateway can enqueue without importing the worker."""

GPU_QUEUE = "gpu"  # generation: one worker process per GPU (solo pool, or threads when micro-batching)
IO_QUEUE = "io"  # webhook delivery and retention sweeps: never on a GPU worker

GENERATE_TASK = "identity_body.generate"
DELIVER_WEBHOOK_TASK = "identity_body.deliver_webhook"
SWEEP_TASK = "identity_body.sweep"
REAP_TASK = "identity_body.reap_orphans"
