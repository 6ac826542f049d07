"""The io worker's health check, exactly as docker-compose.yml and deploy/k8s/worker-io.yaml write
it, run against a real io worker on a loopback Valkey: healthy while the worker runs, unhealthy
for a node that is not there. (`idbody worker ready` is the gpu workers' check: it reads the
heartbeat only gpu workers publish, and says not ready for an io worker; asserted here too.)"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from idbody.stack.polling import until
from shared.queues import IO_QUEUE
from tests.compose_files import load_compose
from worker.run_cli import celery_argv

ROOT = Path(__file__).resolve().parents[2]


def _compose_check() -> str:
    test = load_compose(ROOT / "docker-compose.yml")["services"]["worker-io"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    return test[1].replace("$$", "$")  # Compose's escape for a literal $


def _k8s_checks() -> list[str]:
    checks = []
    for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "worker-io.yaml").read_text()):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            # readiness asks the node over the broker; liveness must not (tests/test_worker_probes.py)
            command = container["readinessProbe"]["exec"]["command"]
            assert command[:2] == ["/bin/sh", "-c"]
            checks.append(command[2])
    return checks


def test_io_health_checks_ping_the_node_name_the_io_worker_takes() -> None:
    argv = celery_argv(IO_QUEUE, None, None, "INFO")
    node = argv[argv.index("--hostname") + 1]
    assert node.startswith(f"{IO_QUEUE}@")
    for check in [_compose_check(), *_k8s_checks()]:
        words = shlex.split(check)
        assert words[words.index("-d") + 1] == f"{IO_QUEUE}@$(hostname)", check


def _run_check(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.integration
def test_io_health_check_passes_for_a_running_io_worker(valkey, tmp_path: Path) -> None:
    env = {**os.environ, "IDBODY_REDIS_URL": valkey.url, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    check = _compose_check()
    quick_no = check.replace("--timeout 5", "--timeout 1")  # a negative answer waits the whole timeout
    assert _run_check(quick_no, env).returncode != 0  # no worker yet

    log = (tmp_path / "io-worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "idbody.cli", "worker", "--queues", IO_QUEUE], env=env,
                              stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        def passes():
            assert worker.poll() is None, (tmp_path / "io-worker.log").read_text()[-2000:]
            answer = _run_check(check, env)
            return answer if answer.returncode == 0 else None

        result = until(passes, 60, "the io worker's healthcheck to pass", interval_s=0.5)
        assert "pong" in result.stdout
        assert _run_check(quick_no.replace("io@$(hostname)", "io@no-such-host"), env).returncode != 0
        ready = subprocess.run([sys.executable, "-m", "idbody.cli", "worker", "ready"], env=env,
                               capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert ready.returncode == 1 and "no fresh worker heartbeat" in ready.stderr
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(20)
        log.close()
