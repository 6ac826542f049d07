"""The probe split on a real GPU-queue worker (tiny profile) and a real Valkey that is killed and
brought back: readiness (`idbody worker ready`: pipeline loaded, broker reachable) fails during the
outage and passes again after it; liveness (`idbody worker alive`) passes all along, so a cluster
never restarts the worker for a broker blip. The probe commands are the ones the k8s manifests and
compose run."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from idbody.stack.polling import until
from idbody.stack.servers import ValkeyServer, stop_process_groups
from idbody.stack.service import ServiceStack, stack_settings
from shared.celery_app import stack_tag
from worker.jobs.liveness import alive_path

ROOT = Path(__file__).resolve().parents[3]


def _k8s_container(name: str) -> dict:
    for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / f"{name}.yaml").read_text()):
        if doc["metadata"]["name"] == f"idbody-{name}":
            return doc["spec"]["template"]["spec"]["containers"][0]
    raise AssertionError(name)


def test_k8s_liveness_never_asks_the_broker_and_readiness_does() -> None:
    gpu = _k8s_container("worker-gpu")
    assert gpu["livenessProbe"]["exec"]["command"] == ["idbody", "worker", "alive", "--queues", "gpu"]
    assert gpu["startupProbe"]["exec"]["command"] == gpu["livenessProbe"]["exec"]["command"]
    assert gpu["readinessProbe"]["exec"]["command"] == ["idbody", "worker", "ready"]
    io = _k8s_container("worker-io")
    assert io["livenessProbe"]["exec"]["command"] == ["idbody", "worker", "alive", "--queues", "io"]
    assert "inspect ping" in io["readinessProbe"]["exec"]["command"][-1]


def _probe(stack: ServiceStack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "idbody.cli", "worker", *args], env=stack.env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.integration
def test_broker_outage_makes_the_worker_unready_never_dead(s3_server, tiny_model_dir, tmp_path: Path) -> None:
    valkey = ValkeyServer.start(tmp_path / "valkey")
    settings = stack_settings(valkey, s3_server, 0, "probe", tiny_model_dir=tiny_model_dir, model_profile="tiny",
                              device="cpu", worker_heartbeat_ttl_s=6)
    node = f"gpu-probe-{uuid.uuid4().hex[:6]}@test"
    alive = ("alive", "--hostname", node)
    try:
        with ServiceStack(settings, tmp_path / "logs") as stack:
            worker = stack._start("gpu", [sys.executable, "-m", "idbody.cli", "worker", "--queues", "gpu",
                                          "--hostname", node])
            # loading the tiny pipeline on a busy 2-core machine: measured 20-60 s
            until(lambda: worker.poll() is not None or _probe(stack, "ready").returncode == 0, 180, "the worker ready")
            assert worker.poll() is None, stack.log("gpu")
            assert _probe(stack, *alive).returncode == 0

            valkey.stop()
            unready = until(lambda: (p := _probe(stack, "ready")).returncode == 1 and p, 60, "readiness to fail")
            assert "unreachable" in unready.stderr
            beacon = alive_path(node, stack_tag(settings.redis_url))
            seen = beacon.stat().st_mtime
            until(lambda: beacon.stat().st_mtime > seen, 30, "the liveness beacon to beat during the outage")
            still = _probe(stack, *alive)
            assert still.returncode == 0, still.stderr
            assert worker.poll() is None, stack.log("gpu")

            valkey = ValkeyServer.start(tmp_path / "valkey-again", port=valkey.port)
            until(lambda: _probe(stack, "ready").returncode == 0, 60, "readiness to come back")
            # the Celery consumer itself reconnected: the node answers a ping over the broker
            ping = ["celery", "-A", "worker.celery_worker", "inspect", "ping", "-d", node, "--timeout", "3"]
            celery = str(Path(sys.executable).with_name("celery"))
            until(lambda: subprocess.run([celery, *ping[1:]], env=stack.env(), cwd=ROOT, capture_output=True,
                                         timeout=60).returncode == 0, 120, "the worker to answer a broker ping")
            assert worker.poll() is None and _probe(stack, *alive).returncode == 0

            # stopped (SIGTERM, as the stack and a cluster stop it), it leaves no liveness file behind
            stop_process_groups([worker], timeout_s=120)  # a warm shutdown, not the SIGKILL past it
            assert worker.returncode == 0, stack.log("gpu")
            assert not alive_path(node, stack_tag(settings.redis_url)).exists()
            assert "no liveness beacon" in _probe(stack, *alive).stderr
    finally:
        valkey.stop()
        alive_path(node, stack_tag(settings.redis_url)).unlink(missing_ok=True)
