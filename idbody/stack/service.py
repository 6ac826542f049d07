"""The job service as real processes for integration tests and the gateway bench: the gateway
(``idbody api``) and GPU-queue Celery workers (``idbody worker``), started as subprocesses with the
IDBODY_* environment of one Settings object, each in its own process group.

Example::

    with ServiceStack(settings, tmp_path) as stack:
        stack.start_gateway(); stack.start_worker("gpu0"); stack.wait_ready()
        httpx.post(stack.base_url + "/api/v1/generate-identity-body", ...)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from idbody.stack.polling import answers, until
from idbody.stack.servers import free_port, stop_process_groups
from idbody.stack.up import settings_env
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def stack_settings(valkey, s3_server, db: int, bucket_prefix: str, **overrides) -> Settings:
    """Settings for one test module's stack: its own Valkey db (other modules flush db 0), fresh
    buckets, the loopback servers' credentials; ``overrides`` set the rest.

    Example::

        stack_settings(valkey, s3_server, 3, "e2e", model_profile="tiny")
    """
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        _env_file=None,
        redis_url=valkey.url.rsplit("/", 1)[0] + f"/{db}",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_bucket_uploads=f"{bucket_prefix}-up-{suffix}",
        s3_bucket_results=f"{bucket_prefix}-res-{suffix}",
        **overrides,
    )


@dataclass
class ServiceStack:
    settings: Settings
    log_dir: Path
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        update = {"api_port": self.port, "api_host": "127.0.0.1"}
        return {**os.environ, **settings_env(self.settings.model_copy(update=update)), "PYTHONUNBUFFERED": "1"}

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{name}.log").open("ab") as fh:
            proc = subprocess.Popen(argv, cwd=REPO, env=self.env(), stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_gateway(self, workers: int | None = None) -> subprocess.Popen:
        """``idbody api``; ``workers`` gateway processes (default: the settings' api_workers)."""
        argv = [sys.executable, "-m", "idbody.cli", "api"]
        return self._start("api", argv + (["--workers", str(workers)] if workers else []))

    def wait_healthy(self, timeout_s: float = 30) -> None:
        """Until the gateway answers /healthz (it does not need Redis, S3 or a worker)."""
        def healthy() -> bool:
            self._raise_if_exited(["api"])
            resp = answers(lambda: httpx.get(self.base_url + "/healthz", timeout=1), httpx.HTTPError)
            return resp is not None and resp.status_code == 200

        try:
            until(healthy, timeout_s, "the gateway to answer /healthz", interval_s=0.1)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log('api')}") from None

    def _raise_if_exited(self, names) -> None:
        for name in names:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def start_worker(self, name: str, queue: str = "gpu", beat: bool = False) -> subprocess.Popen:
        argv = [sys.executable, "-m", "idbody.cli", "worker", "--queues", queue, "--hostname", f"{name}@test"]
        return self._start(name, argv + (["--beat"] if beat else []))

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def wait_ready(self, timeout_s: float = 120, workers: int = 1) -> None:
        """Until /readyz answers 200 and ``workers`` GPU workers publish a heartbeat."""
        from shared.jobs.store import JobStore

        store = JobStore.from_settings(self.settings)

        def ready() -> bool:
            self._raise_if_exited(list(self.procs))
            resp = answers(lambda: httpx.get(self.base_url + "/readyz", timeout=2), httpx.HTTPError)
            return resp is not None and resp.status_code == 200 and len(store.live_workers()) >= workers

        try:
            until(ready, timeout_s, f"/readyz and {workers} GPU worker heartbeat(s)", interval_s=0.2)
        except TimeoutError as exc:
            logs = "\n".join(f"--- {n}\n{self.log(n)}" for n in self.procs)
            raise TimeoutError(f"{exc}\n{logs}") from None

    def stop(self) -> None:
        stop_process_groups(list(self.procs.values()))

    def __enter__(self) -> "ServiceStack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def running_stack(settings: Settings, log_dir: Path, ready_timeout_s: float = 150, *,
                  gpu_workers: tuple[str, ...] = ("gpu0",), io_worker: str | None = "io0",
                  beat: bool = False) -> Iterator[ServiceStack]:
    """An emptied job-store db and fresh buckets, then the gateway, the GPU workers and (unless
    ``io_worker`` is None) an io worker, which also runs beat (webhook retries, the retention
    sweep, the reaper) when ``beat``; ready; all stopped on exit.

    Example::

        with running_stack(settings, tmp_path) as stack:
            httpx.post(stack.base_url + "/api/v1/generate-identity-body", ...)
    """
    from shared.jobs.store import JobStore
    from shared.storage import Storage

    JobStore.from_settings(settings).client.flushdb()
    Storage.from_settings(settings).ensure_buckets()
    with ServiceStack(settings, log_dir) as stack:
        stack.start_gateway()
        for name in gpu_workers:
            stack.start_worker(name)
        if io_worker is not None:
            stack.start_worker(io_worker, queue="io", beat=beat)
        stack.wait_ready(timeout_s=ready_timeout_s, workers=len(gpu_workers))
        yield stack

