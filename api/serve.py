"""``idbody api``: run the gateway with uvicorn.

Example::

    idbody api --host 0.0.0.0 --port 8000 --workers 2
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("api", help="Run the HTTP gateway (uvicorn).")
    parser.add_argument("--host", default=None, help="Bind address (default: IDBODY_API_HOST).")
    parser.add_argument("--port", type=int, default=None, help="Port (default: IDBODY_API_PORT).")
    parser.add_argument("--workers", type=int, default=None, help="Processes (default: IDBODY_API_WORKERS).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from shared.settings import get_settings

    settings = get_settings()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        workers=args.workers or settings.api_workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
    return 0
