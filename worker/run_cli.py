"""``idbody worker``: run a Celery worker for the ``gpu`` or ``io`` queue, or check readiness.

Example::

    idbody worker                     # gpu queue: --pool solo, one process, prefetch 1
    idbody worker --queues io --concurrency 8
    idbody worker ready               # exit 0 when this host's GPU worker heartbeat is fresh
"""

from __future__ import annotations

import argparse
import socket
import sys

from shared.queues import GPU_QUEUE, IO_QUEUE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="Run a Celery worker (gpu or io queue), or check its readiness.")
    parser.add_argument("action", nargs="?", choices=("run", "ready"), default="run",
                        help="run (default) or ready: exit 0 when this host's worker heartbeat is fresh.")
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
                beat: bool = False) -> list[str]:
    """The ``celery worker`` arguments for a queue. Pure, so the gpu guarantees can be tested.

    Example::

        celery_argv("gpu", None, None, "INFO")
        # ['worker', '-Q', 'gpu', '--pool', 'solo', '--concurrency', '1', '--prefetch-multiplier', '1', ...]
    """
    if queue == GPU_QUEUE:
        if concurrency not in (None, 1):
            raise SystemExit("a gpu worker runs one process per GPU; start one worker per GPU instead of --concurrency")
        pool, procs = "solo", 1
    else:
        pool, procs = "threads", concurrency or 4
    if beat and queue != IO_QUEUE:
        raise SystemExit("--beat belongs on an io worker (--queues io): the sweep must never wait behind a GPU job")
    return [
        "worker", *(["--beat"] if beat else []), "-Q", queue, "--pool", pool, "--concurrency", str(procs),
        "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--hostname", hostname or f"{queue}@{socket.gethostname()}", "--loglevel", loglevel,
    ]


def _main(args: argparse.Namespace) -> int:
    from shared.settings import get_settings

    settings = get_settings()
    if args.action == "ready":
        return _ready(settings)
    _configure_logging(settings.log_level)
    from worker.celery_worker import app

    app.worker_main(celery_argv(args.queues, args.concurrency, args.hostname, args.loglevel or settings.log_level,
                                args.beat))
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


def _info(worker) -> dict:
    return worker if isinstance(worker, dict) else getattr(worker, "info", None) or dict(worker)


def _configure_logging(level: str) -> None:
    import logging

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
