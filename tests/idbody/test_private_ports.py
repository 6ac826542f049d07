"""SeaweedFS's filer serves every bucket over plain HTTP without S3 auth, and its master and volume
ports are no better: only the S3 gateway may listen beyond loopback, and on loopback (open to every
local user) every other port (master, volume, filer and admin HTTP, every gRPC port) wants the
stack's own client certificate, and the filer and volume also its keys
(idbody/stack/seaweed_security.py). Checked on a real ``weed``
for the local launcher (``idbody up``, the test fixtures) and for the compose start script's own
flags; no fixed extra ports (Iceberg 8181, Lance 9101) and no telemetry in either."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from idbody.stack.polling import until
from idbody.stack.servers import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
S3_START = ROOT / "deploy" / "seaweedfs" / "s3-start.sh"


def _listening(pid: int) -> list[tuple[str, int]]:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sorted({(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN})


def test_local_launcher_listens_on_loopback_only(s3_server):
    listening = _listening(s3_server.proc.pid)
    assert listening and all(ipaddress.ip_address(ip).is_loopback for ip, _ in listening), listening
    assert not {8181, 9101} & {port for _, port in listening}
    argv = psutil.Process(s3_server.proc.pid).cmdline()
    assert {"-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"} <= set(argv)


def _compose_argv(tmp_path: Path) -> list[str]:
    """The flags deploy/seaweedfs/s3-start.sh starts ``weed`` with (a stub records them)."""
    stub_dir = tmp_path / "stub"
    stub_dir.mkdir()
    stub = stub_dir / "weed"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$OUT"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "argv"
    env = {"PATH": f"{stub_dir}:/usr/bin:/bin", "OUT": str(out), "TMPDIR": str(tmp_path)}
    subprocess.run(["sh", str(S3_START)], env=env, check=True, timeout=30)
    return out.read_text().split()


def test_compose_seaweedfs_exposes_only_s3(tmp_path):
    argv = _compose_argv(tmp_path)
    assert "-ip.bind=127.0.0.1" in argv and "-s3.ip.bind=0.0.0.0" in argv and "-master.telemetry=false" in argv
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    # s3-init reaches master and filer through the s3 container's own loopback
    assert compose["s3-init"]["network_mode"] == "service:s3"
    # run the real server with exactly those flags (later flags only move ports and the data folder)
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "mg", "vg", "fg", "sg")}
    (tmp_path / "data").mkdir()
    moved = [f"-dir={tmp_path / 'data'}", f"-master.port={ports['master']}", f"-master.port.grpc={ports['mg']}",
             f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['vg']}", f"-filer.port={ports['filer']}",
             f"-filer.port.grpc={ports['fg']}", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['sg']}"]
    weed = str(Path(sys.executable).with_name("weed"))
    with (tmp_path / "weed.log").open("wb") as log:
        proc = subprocess.Popen([weed, *argv, *moved], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                start_new_session=True, env={**os.environ})
    try:
        wanted = {ports[n] for n in ("master", "volume", "filer", "s3")}
        until(lambda: wanted <= {p for _, p in _listening(proc.pid)}, 120, "weed server listening")
        public = {port for ip, port in _listening(proc.pid) if not ipaddress.ip_address(ip).is_loopback}
        assert public and public <= {ports["s3"], ports["sg"]}, (public, ports)
    finally:
        proc.kill()
        proc.wait(15)


def _ports_of(s3_server) -> dict[str, int]:
    argv = psutil.Process(s3_server.proc.pid).cmdline()
    return {a.split("=", 1)[0].lstrip("-"): int(a.split("=", 1)[1]) for a in argv
            if a.split("=", 1)[0].endswith((".port", ".port.grpc")) and a.split("=", 1)[1].isdigit()}


def _http_get(url: str, context=None) -> tuple[int | None, bytes]:
    """(status, body); (None, the error) when the connection is refused or cut before an answer."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:  # TLS refused (no client certificate), reset, closed
        assert not isinstance(exc, TimeoutError) and "timed out" not in str(exc), (url, exc)
        return None, repr(exc).encode()


def _tls(s3_server, with_certificate: bool):
    import ssl

    context = ssl.create_default_context(cafile=str(s3_server.workdir / "ca.crt"))
    if with_certificate:  # what the stack's own parts present
        context.load_cert_chain(s3_server.workdir / "stack.crt", s3_server.workdir / "stack.key")
    return context


def _store_secret(s3_server, bucket: str) -> bytes:
    import boto3

    secret = b"a face nobody else may read " * 64
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id=s3_server.access_key,
                      aws_secret_access_key=s3_server.secret_key, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="job/face.jpg", Body=secret)
    assert s3.get_object(Bucket=bucket, Key="job/face.jpg")["Body"].read() == secret  # S3 with its keys: fine
    return secret


def test_local_inner_http_ports_refuse_a_client_without_the_stacks_certificate(s3_server, settings):
    """The black-box probe of another local process: the master's assign, lookup and status, the
    filer's object and the volume's and admin's status, over plain HTTP and over TLS without the
    client certificate; every port weed listens on but S3 is covered."""
    bucket = settings.s3_bucket_uploads
    secret = _store_secret(s3_server, bucket)
    ports = _ports_of(s3_server)
    master, filer, volume, admin = (ports[f"{n}.port"] for n in ("master", "filer", "volume", "admin"))
    probes = [f"{master}/dir/assign", f"{master}/dir/lookup?volumeId=1", f"{master}/vol/status",
              f"{master}/cluster/status", f"{filer}/buckets/{bucket}/job/face.jpg", f"{filer}/buckets/{bucket}/job/",
              f"{volume}/status", f"{admin}/health", f"{admin}/metrics"]
    http_ports = {int(p.split("/", 1)[0]) for p in probes}
    # no HTTP port escapes the list: the rest are gRPC (mutual TLS, tested below) and S3
    grpc = {port for name, port in ports.items() if name.endswith(".grpc")}
    assert {port for _, port in _listening(s3_server.proc.pid)} == http_ports | grpc | {s3_server.port}
    for probe in probes:
        status, body = _http_get(f"http://127.0.0.1:{probe}")
        assert status == 400 and b"HTTPS" in body and secret[:20] not in body, (probe, status, body[:200])
        status, body = _http_get(f"https://127.0.0.1:{probe}", _tls(s3_server, with_certificate=False))
        assert status is None and secret[:20] not in body, (probe, status, body[:200])
    # the same master, asked with the stack's certificate, answers: the certificate is what is missing
    status, body = _http_get(f"https://127.0.0.1:{master}/dir/assign", _tls(s3_server, with_certificate=True))
    assert status == 200 and b'"fid"' in body, body
    # the S3 port still wants its keys
    assert _http_get(f"{s3_server.endpoint_url}/{bucket}/job/face.jpg")[0] == 403


def test_local_filer_and_volume_refuse_reads_without_the_stacks_keys(s3_server, settings):
    """Behind the certificate, the filer and the volume still want the stack's signed tokens."""
    import json

    bucket = settings.s3_bucket_uploads
    secret = _store_secret(s3_server, bucket)
    ports = _ports_of(s3_server)
    stack_tls = _tls(s3_server, with_certificate=True)
    for url in (f"https://127.0.0.1:{ports['filer.port']}/buckets/{bucket}/job/face.jpg",
                f"https://127.0.0.1:{ports['filer.port']}/buckets/{bucket}/job/"):
        status, body = _http_get(url, stack_tls)
        assert status == 401 and secret[:20] not in body, (url, status, body[:200])
    # a volume read of a file id the master hands out also wants a token it does not give here
    status, body = _http_get(f"https://127.0.0.1:{ports['master.port']}/dir/assign", stack_tls)
    fid = json.loads(body)["fid"]
    assert _http_get(f"https://127.0.0.1:{ports['volume.port']}/{fid}", stack_tls)[0] == 401


def test_local_grpc_ports_want_the_stacks_client_certificate(s3_server):
    import socket
    import ssl

    ports = _ports_of(s3_server)
    context = ssl.create_default_context(cafile=str(s3_server.workdir / "ca.crt"))
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    for name in ("master.port.grpc", "volume.port.grpc", "filer.port.grpc"):
        with socket.create_connection(("127.0.0.1", ports[name]), timeout=30) as raw:
            # plain text (what an unconfigured weed shell speaks) gets no HTTP/2 answer
            raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            assert not raw.recv(64).startswith(b"\x00\x00"), name
        # TLS without a client certificate: the server ends it (TLS 1.3 says so after the handshake)
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with context.wrap_socket(socket.create_connection(("127.0.0.1", ports[name]), timeout=30)) as tls:
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                if not tls.recv(64):
                    raise ConnectionResetError(f"{name} closed the connection")
