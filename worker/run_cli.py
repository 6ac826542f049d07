"""``idbody worker``: run a Celery worker for the ``gpu`` or ``io`` queue, or check readiness.

Example::

    idbody worker                     # gpu queue: one process; solo pool, or threads when micro-batching
    idbody worker --queues io --concurrency 8
    idbody worker ready               # readiness: pipeline loaded and broker reachable (heartbeat fresh)
    idbody worker alive               # liveness: the worker process runs (no broker needed)
"""

from __future__ import annotations

import argparse
import socket
import sys

from shared.queues import GPU_QUEUE, IO_QUEUE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="Run a Celery worker (gpu or io queue), or check its readiness.")
    parser.add_argument("action", nargs="?", choices=("run", "ready", "alive"), default="run",
                        help="run (default); ready: exit 0 when this host's gpu worker has its pipeline loaded "
                             "and reaches the broker (readiness probe); alive: exit 0 while the worker "
                             "process of --queues/--hostname runs, broker or not (liveness probe).")
    parser.add_argument("--queues", choices=(GPU_QUEUE, IO_QUEUE), default=GPU_QUEUE,
                        help="gpu: one process per GPU with the pipeline resident; io: webhooks and sweeps.")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="io only: parallel tasks (default 4). A gpu worker is always one process.")
    parser.add_argument("--beat", action="store_true",
                        help="io only: also run Celery beat in this worker (the periodic retention sweep). One per deployment.")
    parser.add_argument("--hostname", default=None, help="Celery node name (default: gpu@<host> / io@<host>).")
    parser.add_argument("--loglevel", default=None, help="Default: settings.log_level.")
    parser.set_defaults(func=_main)


def celery_argv(queue: str, concurrency: int | None, hostname: str | None, loglevel: str,
                beat: bool = False, quiet: bool = False, gpu_slots: int = 1) -> list[str]:
    """The ``celery worker`` arguments for a queue. Pure, so the gpu guarantees can be tested.
    ``gpu_slots`` (``micro_batch_slots``): jobs a gpu worker runs at once, in threads of its one
    process so their denoise passes can be shared; 1 is the solo pool.

    Example::

        celery_argv("gpu", None, None, "INFO")
        # ['worker', '-Q', 'gpu', '--pool', 'solo', '--concurrency', '1', '--prefetch-multiplier', '1', ...]
        celery_argv("gpu", None, None, "INFO", gpu_slots=8)   # --pool threads --concurrency 8
    """
    if queue == GPU_QUEUE:
        if concurrency not in (None, 1):
            raise SystemExit("a gpu worker runs one process per GPU; start one worker per GPU instead of --concurrency")
        pool, procs = ("threads", gpu_slots) if gpu_slots > 1 else ("solo", 1)
    else:
        pool, procs = "threads", concurrency or 4
    if beat and queue != IO_QUEUE:
        raise SystemExit("--beat belongs on an io worker (--queues io): the sweep must never wait behind a GPU job")
    return [
        # JSON logs: no multi-line start banner among the JSON lines (a global option: before `worker`)
        *(["--quiet"] if quiet else []),
        "worker", *(["--beat"] if beat else []), "-Q", queue, "--pool", pool, "--concurrency", str(procs),
        "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--hostname", hostname or default_node(queue), "--loglevel", loglevel,
    ]


def _gpu_slots(args: argparse.Namespace, settings) -> int:
    if args.queues != GPU_QUEUE:
        return 1
    from worker.engine.devices import DevicePolicy
    from worker.engine.micro_batcher import micro_batch_slots

    return micro_batch_slots(settings, DevicePolicy.decide(settings).device)


def default_node(queue: str) -> str:
    """The Celery node name a worker of ``queue`` takes unless --hostname says otherwise."""
    return f"{queue}@{socket.gethostname()}"


def _main(args: argparse.Namespace) -> int:
    from shared.settings import get_settings

    settings = get_settings()
    if args.action == "ready":
        return _ready(settings)
    node = args.hostname or default_node(args.queues)
    if args.action == "alive":
        return _alive(node, settings)
    if args.queues == IO_QUEUE and (refusal := _deployment_refusal(settings)):
        print(f"idbody worker: not starting: {refusal}", file=sys.stderr)
        return 2
    from shared.structured_logs import configure_logging, log_format

    configure_logging(settings)
    from shared.celery_app import stack_tag
    from worker.celery_worker import app
    from worker.jobs.liveness import LivenessBeacon, alive_path

    beacon = LivenessBeacon(alive_path(node, stack_tag(settings.redis_url))).start()
    try:
        app.worker_main(celery_argv(args.queues, args.concurrency, args.hostname, args.loglevel or settings.log_level,
                                    args.beat, quiet=log_format(settings) == "json", gpu_slots=_gpu_slots(args, settings)))
    finally:  # a worker that stopped leaves no beacon behind (Celery ends with SystemExit)
        beacon.stop()
    return 0


def _ready(settings) -> int:
    from shared.jobs.store import JobStore

    host = socket.gethostname()
    try:
        workers = JobStore.from_settings(settings).live_workers()
    except Exception as exc:  # Redis down: not ready, say why on stderr
        print(f"not ready: job store unreachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    mine = [w for w in workers if _info(w).get("hostname") == host]
    if not mine:
        print(f"not ready: no fresh worker heartbeat from {host}", file=sys.stderr)
        return 1
    print(f"ready: {len(mine)} worker(s) on {host}, profile {_info(mine[0]).get('profile')}")
    return 0


def _alive(node: str, settings) -> int:
    from shared.celery_app import stack_tag
    from worker.jobs.liveness import alive_path, check_alive

    alive, sentence = check_alive(alive_path(node, stack_tag(settings.redis_url)))
    print(sentence, file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


def _deployment_refusal(settings) -> str | None:
    """The io worker renders webhook bodies: it needs the public API URL as the gateway does."""
    from shared.deployment import DeploymentSettingsError, check_deployment

    try:
        check_deployment(settings)
    except DeploymentSettingsError as exc:
        return str(exc)
    return None


def _info(worker) -> dict:
    return worker if isinstance(worker, dict) else getattr(worker, "info", None) or dict(worker)

