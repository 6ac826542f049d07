"""``idbody api``: run the gateway with uvicorn, one or more processes from the app factory.

Each process parses HTTP with httptools on uvloop (``uvicorn[standard]``), closes connections whose
request headers are late (``api.header_deadline``: ``header_timeout_s``), answers 503 past
``max_connections`` open connections, and raises its open-files limit to fit them.

Example::

    idbody api --host 0.0.0.0 --port 8000 --workers 2
"""

from __future__ import annotations

import argparse
import socket

# files a gateway process holds besides client connections: Valkey and S3 pools, logs, spooled uploads
FILES_BESIDE_CONNECTIONS = 512


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("api", help="Run the HTTP gateway (uvicorn).")
    parser.add_argument("--host", default=None, help="Bind address (default: IDBODY_API_HOST).")
    parser.add_argument("--port", type=int, default=None, help="Port (default: IDBODY_API_PORT).")
    parser.add_argument("--workers", type=int, default=None, help="Processes (default: IDBODY_API_WORKERS).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One process: uvicorn serves the factory's app. N processes: uvicorn's supervisor starts N,
    each building its own app (and clients) from the factory, all accepting on one socket."""
    import sys

    import uvicorn

    from shared.deployment import DeploymentSettingsError, check_deployment
    from shared.settings import get_settings
    from shared.structured_logs import logging_config

    settings = get_settings()
    try:
        check_deployment(settings)
    except DeploymentSettingsError as exc:
        print(f"idbody api: not starting: {exc}", file=sys.stderr)
        return 2
    options = {
        "factory": True,
        "host": args.host or settings.api_host,
        "port": args.port or settings.api_port,
        "workers": args.workers or settings.api_workers,
        "log_level": settings.log_level.lower(),
        "log_config": logging_config(settings),  # JSON or text lines, uvicorn's own included
        "proxy_headers": True,
        "http": "api.header_deadline:HeaderDeadlineProtocol",
        "limit_concurrency": settings.max_connections,
    }
    raise_open_files_limit(settings.max_connections + FILES_BESIDE_CONNECTIONS)
    if options["workers"] == 1:
        uvicorn.run("api.main:create_app", **options)
        return 0
    from uvicorn.supervisors import Multiprocess

    from api.gateway_metrics_dir import prepare_multiprocess_dir

    # before the processes start: prometheus-client reads it at import (every request counted once)
    prepare_multiprocess_dir(options["workers"])
    config = uvicorn.Config("api.main:create_app", **options)
    try:
        Multiprocess(config, sockets=[with_tcp_proto(config.bind_socket())]).run()
    except KeyboardInterrupt:
        pass
    return 0


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit, never
    lowered); the limit now in force. Processes started afterwards inherit it.

    Example::

        raise_open_files_limit(5000)   # 5000 (the usual default soft limit is 1024)
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def with_tcp_proto(sock: socket.socket) -> socket.socket:
    """The same listening socket, labelled IPPROTO_TCP.

    uvicorn's multi-process path binds with ``proto`` 0; accepted sockets inherit it, and asyncio
    sets TCP_NODELAY only on sockets whose ``proto`` is IPPROTO_TCP. Without it every keep-alive
    response after the first waits ~40 ms for the client's delayed ACK (Nagle): measured here as
    status GETs falling from ~1,000/s to 176/s with two processes (uvicorn issue 3149).

    Example::

        with_tcp_proto(config.bind_socket()).proto   # 6
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.proto == socket.IPPROTO_TCP:
        return sock
    return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
