"""SIGKILL a GPU worker in the middle of a job, again and again: every job goes back to the queue
within a minute (the reaper sees its lease expire), finishes exactly once on another worker, and
fires exactly one webhook. Two GPU workers run the tiny profile; the killed one is restarted while
the other carries on. ``--chaos-kills`` sets the count (10 in CI)."""

from __future__ import annotations

import math
import os
import signal
import time

import pytest

from idbody.stack.polling import until
from idbody.stack.service import ServiceStack, running_stack, stack_settings
from shared.access.api_keys import new_webhook_secret
from shared.jobs.record import JobStatus
from shared.jobs.store import JobStore
from tests.chaos.chaos_stack import Stopwatch, submit
from tests.face_photos import tom_jpeg
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

REQUEUE_BOUND_S = 60  # the bound: a dead worker's job is back in the queue within a minute
GPU_WORKERS = ("gpu0", "gpu1")
KILL_JOB_MIN_S = 3  # how long a job should last for the kill to land mid-job


def steps_lasting(seconds: float, quick_job_s: float) -> int:
    """Denoise steps for a job of about ``seconds``, from a two-step job's measured duration (an
    upper bound of a step's cost): 4 on a slow, busy machine, up to 50 on a fast one."""
    return max(4, min(50, math.ceil(seconds / (quick_job_s / 2))))


@pytest.fixture(scope="module")
def stack(valkey, s3_server, tiny_model_dir, tmp_path_factory):
    settings = stack_settings(
        valkey, s3_server, 10, "kill", tiny_model_dir=tiny_model_dir, model_profile="tiny", device="cpu",
        auth_disabled=True, webhook_allow_hosts=["127.0.0.1"], webhook_secret=new_webhook_secret(),
        # a lease of 3 s renewed every second, looked at every second by the reaper
        worker_heartbeat_ttl_s=3, reaper_interval_s=1,
    )
    with running_stack(settings, tmp_path_factory.mktemp("kill-logs"), 600, gpu_workers=GPU_WORKERS,
                       io_worker="io", beat=True) as stack:
        yield stack


def _worker_named(stack: ServiceStack, worker_id: str) -> str:
    """The stack's name of the process a record's ``worker`` (host:pid) names."""
    pid = int(worker_id.rsplit(":", 1)[1])
    [name] = [n for n, p in stack.procs.items() if p.pid == pid]
    return name


def _running(store: JobStore, rid: str):
    record = store.get(rid)
    if record is not None and record.status.finished:
        raise AssertionError(f"job {rid} finished ({record.status.value}) before the kill landed")
    return record if record is not None and record.status is JobStatus.RUNNING else None


def test_sigkilled_gpu_worker_jobs_finish_exactly_once(stack, request):
    kills = request.config.getoption("--chaos-kills")
    store = JobStore.from_settings(stack.settings)
    receiver = Receiver()
    whole = Stopwatch()
    # deadlines and the job's length from measured speed: a two-step warm-up job
    clock = Stopwatch()
    warm = submit(stack.base_url, tom_jpeg(), webhook_url=receiver.url())
    until(lambda: store.get(warm.json()["request_id"]).status.finished, 600, "the warm-up job")
    job_s = clock()
    kill_job = {"num_inference_steps": str(steps_lasting(KILL_JOB_MIN_S, job_s))}
    requeue_delays: list[float] = []
    try:
        for round_ in range(kills):
            r = submit(stack.base_url, tom_jpeg(), **kill_job, webhook_url=receiver.url())
            assert r.status_code == 202, r.text
            rid = r.json()["request_id"]
            running = until(lambda: _running(store, rid), 10 * job_s + 60, f"job {rid} running")
            victim = _worker_named(stack, running.worker)
            os.killpg(stack.procs[victim].pid, signal.SIGKILL)
            killed_at = time.time()
            stack.procs[victim].wait(30)
            requeued = until(lambda: store.get(rid).requeued_at, REQUEUE_BOUND_S, f"job {rid} requeued")
            requeue_delays.append(requeued - killed_at)
            stack.start_worker(victim)  # loads in the background while the other worker carries on
            until(lambda: store.get(rid).status.finished, 20 * job_s + 300, f"job {rid} finished")
            final = store.get(rid)
            assert final.status is JobStatus.SUCCEEDED, final.error
            assert final.attempts == 2 and final.worker != running.worker, (round_, final.attempts)
        until(lambda: len(receiver.requests) >= kills + 1, 120, "one webhook per job")
        rids = [r.headers["webhook-id"] for r in receiver.requests]
        assert len(rids) == len(set(rids)) == kills + 1, rids
    finally:
        receiver.close()
    print(f"\n{kills} SIGKILLs: {kills}/{kills} succeeded once with one webhook; requeued "
          f"{min(requeue_delays):.1f}-{max(requeue_delays):.1f} s after the kill; two-step job {job_s:.1f} s, "
          f"kill jobs {kill_job['num_inference_steps']} steps; whole test {whole():.0f} s")
