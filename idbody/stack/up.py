"""``idbody up``: the whole service on this machine in one command.

Starts Valkey and SeaweedFS S3 on loopback (unless the settings point at running ones), then the
gateway and the workers as child processes, waits for ``/readyz``, prints the URLs, then one line
per job event, and stops everything (whole process groups, no orphans) on Ctrl-C or SIGTERM.

Example::

    idbody up                       # API on http://127.0.0.1:8000, docs at /docs
    idbody up --workers 2 --profile tiny --port 8080
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from pydantic import SecretStr

from idbody.stack.polling import answers, until
from idbody.stack.preflight import check_configured, check_port_free, with_tiny_default_size
from idbody.stack.servers import stop_process_groups
from shared.settings import ENV_PREFIX, Settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
CHILDREN_STOP_S, SERVERS_STOP_S = 15, 10  # then SIGKILL


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("up", help="Run Valkey, S3, the gateway (web page at /) and workers locally; "
                                              "Ctrl-C or SIGTERM stops all.")
    parser.add_argument("--workers", type=int, default=1, help="GPU-queue worker processes (one per GPU).")
    parser.add_argument("--profile", choices=("auto", "tiny", "instantid"), default=None,
                        help="Model profile (default: settings.model_profile).")
    parser.add_argument("--port", type=int, default=None,
                        help="Gateway port (default: IDBODY_API_PORT, 8000); a taken port is an error.")
    parser.add_argument("--data-dir", type=Path, default=Path(".cache/stack"), help="Where Valkey and S3 keep data and logs.")
    parser.add_argument("--ready-timeout", type=float, default=600, help="Seconds to wait for /readyz.")
    parser.set_defaults(func=_main)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class Stack:
    children: list[Child] = field(default_factory=list)
    servers: list = field(default_factory=list)

    def stop(self, say=print) -> None:
        """Stop the children, then the servers (a worker shutting down warm still talks to Valkey),
        saying what it waits for and, at the end, how long it took."""
        started = time.monotonic()
        children = [child for child in self.children if child.proc.poll() is None]
        servers = [server for server in self.servers if server.proc.poll() is None]
        if not (children or servers):
            return
        if children:
            say(f"Stopping {', '.join(child.name for child in children)}: a worker finishes its current "
                f"denoise step first (killed after {CHILDREN_STOP_S} s) ...", flush=True)
        stop_process_groups([child.proc for child in children], timeout_s=CHILDREN_STOP_S)
        if servers:
            say(f"Stopping {', '.join(server.name for server in servers)} ...", flush=True)
        stop_process_groups([server.proc for server in servers], timeout_s=SERVERS_STOP_S)
        say(f"Stopped everything in {time.monotonic() - started:.1f} s.", flush=True)


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as IDBODY_* variables, so a child process reads back the same settings.
    Unset optional fields are left out (the child uses their default).

    Example::

        settings_env(Settings(redis_url="redis://127.0.0.1:7000/0"))["IDBODY_REDIS_URL"]
    """
    env: dict[str, str] = {}
    for name, value in settings:
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = str(value.resolve())
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env


def child_env(settings: Settings, profile: str, port: int) -> dict[str, str]:
    """The environment every child of ``idbody up`` gets: same servers and credentials, the chosen
    profile, auth off.

    Example::

        child_env(settings, "tiny", 8000)["IDBODY_AUTH_DISABLED"]   # "true"
    """
    update = {"model_profile": profile, "api_port": port, "auth_disabled": True}
    return {**os.environ, **settings_env(settings.model_copy(update=update)), "PYTHONUNBUFFERED": "1"}


def _with_webhook_secret(settings: Settings) -> Settings:
    """Jobs submitted without a key (auth is off here) are signed with settings.webhook_secret:
    make one for this run when none is configured, and say which."""
    from pydantic import SecretStr

    from shared.access.api_keys import new_webhook_secret

    if settings.webhook_secret is None:
        settings = settings.model_copy(update={"webhook_secret": SecretStr(new_webhook_secret())})
        print("Webhook secret for this run (set IDBODY_WEBHOOK_SECRET to keep one): "
              f"{settings.webhook_secret.get_secret_value()}")
    return settings


def start_child(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Child:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("ab") as fh:
        # own session = own process group, so stopping it also stops whatever it forked
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Child(name, proc, log)


def ensure_servers(settings: Settings, data_dir: Path, stack: Stack) -> Settings:
    """Start Valkey / SeaweedFS S3 where the settings' ones do not answer; returns settings that point
    at the servers in use."""
    from idbody.stack.servers import SeaweedS3Server, ValkeyServer

    update: dict[str, object] = {}
    redis_host, redis_port = _host_port(settings.redis_url, 6379)
    if _reachable(redis_host, redis_port):
        check_configured(settings, "redis_url", "redis://127.0.0.1:6380/0")
        print(f"Valkey/Redis: using the running server at {settings.redis_url}")
    elif redis_host in LOOPBACK:
        valkey = ValkeyServer.start(data_dir / "valkey", port=redis_port, appendonly=True)
        stack.servers.append(valkey)
        update["redis_url"] = valkey.url
        print(f"Valkey: started on {valkey.url} (data in {valkey.workdir})")
    else:
        raise SystemExit(f"Redis at {settings.redis_url} does not answer and is not on this machine.")

    endpoint = settings.s3_endpoint_url
    s3_host, s3_port = _host_port(endpoint or "", 443)
    if endpoint and _reachable(s3_host, s3_port):
        check_configured(settings, "s3_endpoint_url", "http://127.0.0.1:8334")
        print(f"S3: using the running endpoint at {endpoint}")
    elif endpoint and s3_host in LOOPBACK:
        s3 = SeaweedS3Server.start(
            data_dir / "s3", access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(), port=s3_port,
        )
        stack.servers.append(s3)
        update["s3_endpoint_url"] = s3.endpoint_url
        print(f"SeaweedFS S3: started on {s3.endpoint_url} (data in {s3.workdir})")
    elif endpoint:
        raise SystemExit(f"S3 at {endpoint} does not answer and is not on this machine.")
    return settings.model_copy(update=update)


def wait_ready(url: str, children: list[Child], timeout_s: float) -> None:
    """Poll ``/readyz`` until it answers 200; stop early when a child exits."""
    def ready() -> bool:
        for child in children:
            if child.proc.poll() is not None:
                raise SystemExit(f"{child.name} exited with {child.proc.returncode}; see {child.log}")
        return answers(lambda: _status_of(url), urllib.error.URLError, OSError) == 200

    try:
        until(ready, timeout_s, "/readyz", interval_s=0.5)
    except TimeoutError:
        raise SystemExit(f"the stack was not ready within {timeout_s:.0f}s; logs in {children[0].log.parent}") from None


def _status_of(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status


def _main(args: argparse.Namespace) -> int:
    code = _up(args)
    # everything it started has stopped: leave at once. The interpreter's teardown of torch
    # (imported to look for a GPU and to build the tiny profile) took 6-12 s after the closing line
    # on a busy two-core machine, a silence that read as a hang.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _up(args: argparse.Namespace) -> int:
    from shared.settings import get_settings
    from worker.models.profile import choose_profile

    settings = get_settings()
    if args.profile:
        settings = settings.model_copy(update={"model_profile": args.profile})
    port = args.port or settings.api_port
    data_dir = args.data_dir.resolve()
    choice = choose_profile(settings)
    print(f"Model profile: {choice.profile} ({choice.reason})")
    print("Auth is OFF for this local stack (IDBODY_AUTH_DISABLED=true): do not expose it to a network.")

    stack = Stack()
    _stop_on_signals()
    try:
        check_port_free(settings.api_host, port)
        settings = ensure_servers(settings, data_dir, stack)
        if choice.profile == "tiny":
            from idbody.stack.quiet_libraries import quiet_libraries
            from worker.tiny.model_dir import build_tiny_model_dir

            with quiet_libraries():
                build_tiny_model_dir(settings.tiny_model_dir)  # once here, so workers do not race to build it
            settings = with_tiny_default_size(settings)
        settings = _with_webhook_secret(settings)
        env = child_env(settings, choice.profile, port)
        py = sys.executable
        logs = data_dir / "logs"
        stack.children.append(start_child("api", [py, "-m", "idbody.cli", "api"], env, logs))
        for i in range(args.workers):
            argv = [py, "-m", "idbody.cli", "worker", "--queues", "gpu", "--hostname", f"gpu{i}@{socket.gethostname()}"]
            stack.children.append(start_child(f"worker-gpu{i}", argv, env, logs))
        # the io worker also runs beat: the retention sweep of face uploads
        io_argv = [py, "-m", "idbody.cli", "worker", "--queues", "io", "--beat", "--hostname", f"io@{socket.gethostname()}"]
        stack.children.append(start_child("worker-io", io_argv, env, logs))
        base = f"http://{settings.api_host}:{port}"
        print(f"Waiting for {base}/readyz (loading the pipeline; logs in {logs}) ...")
        wait_ready(f"{base}/readyz", stack.children, args.ready_timeout)
        print(f"\nWeb:   {base}/\nAPI:   {base}/api/v1/generate-identity-body\nDocs:  {base}/docs"
              f"\nS3:    {settings.s3_endpoint_url}\nRedis: {settings.redis_url}\nLogs:  {logs}"
              "\nCtrl-C stops everything. One line per job event follows.", flush=True)
        _watch(stack.children, settings)
        return 1
    except KeyboardInterrupt:
        print(flush=True)  # past the ^C the terminal echoed
        return 0
    finally:
        stack.stop()


def _watch(children: list[Child], settings: Settings) -> None:
    from idbody.stack.job_console import JobConsole
    from shared.jobs.store import JobStore

    console = JobConsole(JobStore.from_settings(settings), out=lambda line: print(line, flush=True))
    try:
        while True:
            for child in children:
                if child.proc.poll() is not None:
                    print(f"{child.name} exited with {child.proc.returncode}; stopping the stack (see {child.log})")
                    return
            console.poll()
            time.sleep(0.5)
    finally:
        console.close()


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT both stop the stack, SIGINT also where it arrives ignored: a shell starts a
    script's background jobs with SIGINT ignored, and Python then installs no Ctrl-C handler."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "", parsed.port or default_port


def _reachable(host: str, port: int) -> bool:
    if not host:
        return False
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False
