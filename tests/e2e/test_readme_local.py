"""The README's local quick start, run verbatim: its curl and its polling loop against a real
``idbody up`` (tiny profile, auth off, every server on loopback), and its webhook receiver."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from http.server import HTTPServer
from pathlib import Path

import httpx
import pytest
from PIL import Image

from idbody.stack.polling import until
from idbody.stack.servers import free_port
from shared.access.api_keys import new_webhook_secret
from tests.readme_blocks import blocks_under
from worker.webhooks.signing import sign_webhook

REPO = Path(__file__).resolve().parents[2]
# idbody up starts Valkey, SeaweedFS, the gateway, a GPU and an io worker and loads the tiny
# profile: well under a minute idle, several on a busy two-core machine
UP_DEADLINE_S = 420
# the README's job (1 image, 256 px, 8 LCM steps on the tiny profile): 147 s on two cores at load 12
JOB_LIMIT_S = 600


@pytest.fixture(scope="module")
def up(tmp_path_factory, tiny_model_dir):
    workdir = tmp_path_factory.mktemp("idbody-up")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDBODY_")}
    env.update(PYTHONPATH=str(REPO), IDBODY_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
               IDBODY_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", IDBODY_DEVICE="cpu",
               IDBODY_TINY_MODEL_DIR=str(tiny_model_dir), IDBODY_ONNX_PROVIDERS='["CPUExecutionProvider"]')
    log = workdir / "up.log"
    argv = [sys.executable, "-m", "idbody.cli", "up", "--profile", "tiny", "--port", str(port),
            "--data-dir", str(workdir / "stack"), "--ready-timeout", str(UP_DEADLINE_S)]
    with log.open("wb") as out:
        # cwd without a .env: only the variables above configure the stack
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        until(lambda: _ready(base, proc, log), UP_DEADLINE_S, "idbody up to be ready")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # idbody up stops its children on SIGTERM
        proc.wait(60)


def _ready(base: str, proc: subprocess.Popen, log: Path) -> bool:
    assert proc.poll() is None, f"idbody up exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _bash(script: str, api: str, limit_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=REPO, env={**os.environ, "API": api},
                          capture_output=True, text=True, timeout=limit_s, check=False)


@pytest.mark.integration
def test_readme_curl_and_polling_loop_against_idbody_up(up):
    submit, poll = blocks_under("### Try it locally", "bash")
    run = _bash(submit + "\n" + poll, up, JOB_LIMIT_S)
    assert run.returncode == 0, run.stderr
    assert '"status": "queued"' in run.stdout  # the submit answer
    assert '{"status":"succeeded"' in run.stdout  # the loop's last status line
    assert '"success": true' in run.stdout and '"id": "identity_body_0"' in run.stdout  # the result


@pytest.mark.integration
def test_readme_polling_loop_stops_on_an_error_answer(up):
    _, poll = blocks_under("### Try it locally", "bash")
    unknown = f"job='{{\"status_url\": \"{up}/api/v1/jobs/no-such-job\"}}'\n"
    run = _bash(unknown + poll, up, 60)
    assert run.returncode == 0 and '"code":"job_not_found"' in run.stdout


@pytest.mark.integration
def test_readme_python_client_example_against_idbody_up(up, tmp_path):
    (code,) = blocks_under("### Python client", "python")
    (tmp_path / "docs" / "examples").mkdir(parents=True)
    shutil.copy(REPO / "docs" / "examples" / "face.jpg", tmp_path / "docs" / "examples" / "face.jpg")
    env = {k: v for k, v in os.environ.items() if k != "IDBODY_KEY"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False,
                         env={**env, "API": up, "PYTHONPATH": str(REPO)}, timeout=JOB_LIMIT_S)
    assert run.returncode == 0, run.stderr
    assert "identity_body_0.png" in run.stdout
    assert Image.open(tmp_path / "out" / "identity_body_0.png").size == (256, 256)


def test_readme_webhook_receiver_accepts_signed_deliveries_only():
    (code,) = blocks_under("### Webhooks", "python")
    assert len(code.strip().splitlines()) <= 20
    serve_line = code.strip().splitlines()[-1]
    assert serve_line.startswith("HTTPServer(") and serve_line.endswith(".serve_forever()")
    namespace: dict = {}
    exec(compile(code.strip().rsplit("\n", 1)[0], "README.md", "exec"), namespace)  # noqa: S102 - all but serving forever
    namespace["SECRET"] = secret = new_webhook_secret()
    server = HTTPServer(("127.0.0.1", 0), namespace["Hook"])
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        body = b'{"request_id": "r1", "status": "succeeded"}'
        signed = httpx.post(url, content=body, headers=sign_webhook(secret, "msg_1", body))
        forged = httpx.post(url, content=body, headers=sign_webhook(new_webhook_secret(), "msg_1", body))
    finally:
        server.shutdown()
        server.server_close()
    assert signed.status_code == 204 and forged.status_code == 400
