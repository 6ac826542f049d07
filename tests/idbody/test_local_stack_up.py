"""``idbody up`` as a person runs it: a subprocess on free ports, its console, its refusals, and
both ways of stopping it (SIGINT as Ctrl-C sends it, and SIGTERM)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from idbody.stack.polling import until
from idbody.stack.preflight import check_configured, check_port_free, with_tiny_default_size
from idbody.stack.servers import free_port
from shared.settings import Settings
from tests.face_photos import tom_jpeg

REPO = Path(__file__).resolve().parents[2]
READY_S = 300  # the worker loads the tiny pipeline on a machine other tests keep busy
STOP_S = 60  # the children share 15 s to stop before they are killed, then the servers 10 s
# every line the console may print for a job, in the order a job passes them (JobStage's order)
JOB_EVENTS = ("queued", "running: starting", "running: analyzing_face", "running: denoising",
              "running: face_detail", "running: uploading", "succeeded in")
LIBRARY_NOISE = ("Loading pipeline components", "Writing model shards", "Warning", "warn(", "it/s]")


class UpProcess:
    def __init__(self, tmp_path: Path, tiny_model_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.console = tmp_path / "console.txt"
        self.data_dir = tmp_path / "stack"
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "IDBODY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
               "IDBODY_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
               "IDBODY_TINY_MODEL_DIR": str(tiny_model_dir), "IDBODY_DEVICE": "cpu"}
        argv = [sys.executable, "-m", "idbody.cli", "up", "--profile", "tiny", "--port", str(self.port),
                "--data-dir", str(self.data_dir)]
        with self.console.open("wb") as out:
            # started as a script's background job is: SIGINT ignored, which `kill -INT` must still stop
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))

    def text(self) -> str:
        return self.console.read_text(errors="replace")

    def wait_for(self, words: str, deadline_s: float) -> str:
        def seen() -> str | None:
            assert self.proc.poll() is None or words in self.text(), f"idbody up exited:\n{self.text()}"
            return self.text() if words in self.text() else None

        return until(seen, deadline_s, f"'{words}' on the idbody up console")

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            logs = sorted(self.data_dir.glob("logs/*.log"))
            tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}" for log in logs)
            raise AssertionError(f"idbody up still running {STOP_S}s after signal {sig}:\n{self.text()}\n{tails}") from None


@pytest.fixture
def up(tmp_path, tiny_model_dir) -> Iterator[UpProcess]:
    process = UpProcess(tmp_path, tiny_model_dir)
    yield process
    if process.proc.poll() is None:
        process.stop(signal.SIGTERM)


def test_preflight_refuses_a_taken_port_and_unnamed_servers():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SystemExit, match="IDBODY_API_PORT"):
            check_port_free("127.0.0.1", taken.getsockname()[1])
    check_port_free("127.0.0.1", free_port())
    with pytest.raises(SystemExit, match="IDBODY_REDIS_URL"):
        check_configured(Settings(_env_file=None), "redis_url", "redis://127.0.0.1:6380/0")
    check_configured(Settings(_env_file=None, redis_url="redis://127.0.0.1:7/0"), "redis_url", "")
    tiny = with_tiny_default_size(Settings(_env_file=None))
    assert (tiny.default_width, tiny.default_height) == (256, 256)
    chosen = with_tiny_default_size(Settings(_env_file=None, default_width=512))
    assert (chosen.default_width, chosen.default_height) == (512, None)


@pytest.mark.integration
def test_a_taken_port_is_a_clear_error_before_anything_starts(tmp_path, tiny_model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = UpProcess(tmp_path, tiny_model_dir, port=taken.getsockname()[1])
        assert process.proc.wait(STOP_S) == 1
    text = process.text()
    assert f"Port {process.port} on 127.0.0.1 is already in use" in text and "IDBODY_API_PORT" in text
    assert "Valkey: started" not in text  # nothing was started, so nothing is left behind


@pytest.mark.integration
def test_up_serves_small_tiny_jobs_prints_job_events_and_stops_on_ctrl_c(up):
    console = up.wait_for("Ctrl-C stops everything", READY_S)
    assert "jobs that send no size get 256x256" in console
    assert not [noise for noise in LIBRARY_NOISE if noise in console], console
    base = f"http://127.0.0.1:{up.port}"
    assert httpx.get(base + "/api/v1/info").json()["default_size"] == {"width": 256, "height": 256}
    submitted = httpx.post(base + "/api/v1/generate-identity-body", data={"num_images": "1"},
                           files={"face_image": ("me.jpg", tom_jpeg(), "image/jpeg")}, timeout=60).json()
    short = submitted["request_id"][:8]
    console = up.wait_for(f"job {short}  succeeded", READY_S)
    events = [line.split(f"job {short}  ", 1)[1] for line in console.splitlines() if f"job {short}  " in line]
    # one line per event, in order; a stage shorter than the console's poll may pass unseen
    ranks = [next((i for i, first in enumerate(JOB_EVENTS) if event.startswith(first)), None) for event in events]
    assert None not in ranks, f"a console line no job event starts: {events}"
    assert ranks == sorted(set(ranks)) and ranks[0] == 0 and ranks[-1] == len(JOB_EVENTS) - 1, events
    assert events[-1].endswith("1 images 256x256")
    assert up.stop(signal.SIGINT) == 0
    assert "Stopping api, worker-gpu0, worker-io: a worker finishes" in up.text()
    # a closing line with the time it took, after what it waited for
    assert re.search(r"Stopping Valkey, SeaweedFS S3 \.\.\.\nStopped everything in \d+\.\d s\.\n$", up.text()), up.text()
    with pytest.raises(httpx.HTTPError):
        httpx.get(base + "/healthz", timeout=2)


@pytest.mark.integration
def test_sigterm_stops_it_while_the_pipeline_loads(up):
    up.wait_for("Waiting for", READY_S)
    assert up.stop(signal.SIGTERM) == 0
    assert "Stopping api, worker-gpu0, worker-io" in up.text() and "Stopped everything in" in up.text()


@pytest.mark.integration
def test_the_console_prints_each_job_event_once_in_order(settings, redis_client):
    import time

    from idbody.stack.job_console import JobConsole
    from shared.jobs.record import JobRecord, JobStatus
    from shared.jobs.store import FINISHED_CHANNEL, JobStore

    store, lines = JobStore.from_settings(settings), []
    console = JobConsole(store, out=lines.append)
    try:
        store.create(JobRecord(request_id="fast-job", created_at=time.time()))
        store.transition("fast-job", JobStatus.RUNNING, worker="w")  # taken before any poll
        store.set_progress("fast-job", 0, 8, stage="analyzing_face")
        console.poll()
        console.poll()  # nothing changed: nothing printed
        store.set_progress("fast-job", 1, 8, stage="denoising")
        store.set_progress("fast-job", 2, 8, stage="denoising")
        console.poll()
        store.transition("fast-job", JobStatus.FAILED, error={"code": "no_face_detected", "message": "No face."})
        store.create(JobRecord(request_id="gone-job", created_at=time.time()))
        store.transition("gone-job", JobStatus.CANCELED)  # queued and finished between two polls
        console.poll()
        # a finish notice that reaches the console a poll after the end was printed prints nothing
        store.client.publish(FINISHED_CHANNEL.format("fast-job"), "failed")
        for _ in range(20):  # the notice reaches the console's connection within these polls
            console.poll()
            time.sleep(0.1)
    finally:
        console.close()
    events = [line.split("  ", 1)[1] for line in lines]
    assert events[:3] == ["job fast-job  queued", "job fast-job  running: analyzing_face",
                          "job fast-job  running: denoising (8 steps)"]
    assert events[3].startswith("job fast-job  failed in ") and events[3].endswith("no_face_detected (No face.)")
    assert events[4:] == ["job gone-job  queued", events[5]] and events[5].startswith("job gone-job  canceled")
    assert len(events) == 6  # the late notice printed nothing
