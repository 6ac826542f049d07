"""Stop SeaweedFS for 15 s in the middle of a burst of jobs: submits during the outage answer 503
with Retry-After (nothing accepted, nothing stored), the worker waits out the outage instead of
failing the jobs it holds, and afterwards every accepted job has succeeded and no face upload is
left behind. The S3 server here is the test's own, restarted on the same port and data folder."""

from __future__ import annotations

import pytest

from idbody.stack.polling import until
from idbody.stack.servers import SeaweedS3Server
from idbody.stack.service import ServiceStack, running_stack, stack_settings
from shared.jobs.record import JobStatus
from shared.jobs.store import JobStore
from shared.storage import Storage
from tests.chaos.chaos_stack import Stopwatch, records, submit, unfinished, uploads_left
from tests.face_photos import tom_jpeg

pytestmark = pytest.mark.integration

OUTAGE_S = 15


@pytest.fixture(scope="module")
def own_s3(tmp_path_factory):
    with SeaweedS3Server.start(tmp_path_factory.mktemp("outage-s3")) as server:
        yield server


@pytest.fixture(scope="module")
def stack(valkey, own_s3, tiny_model_dir, tmp_path_factory):
    settings = stack_settings(valkey, own_s3, 11, "s3out", tiny_model_dir=tiny_model_dir, model_profile="tiny",
                              device="cpu", auth_disabled=True, sweep_interval_s=1)
    with running_stack(settings, tmp_path_factory.mktemp("s3out-logs"), 600, io_worker="io", beat=True) as stack:
        yield stack


def _submit_jobs(stack: ServiceStack, count: int, accepted: list[str], **fields: str) -> None:
    for _ in range(count):
        r = submit(stack.base_url, tom_jpeg(), **fields)
        assert r.status_code == 202, r.text
        accepted.append(r.json()["request_id"])


def test_storage_outage_fails_no_job_and_leaks_no_upload(stack, own_s3, request):
    burst = request.config.getoption("--chaos-burst")
    store, storage = JobStore.from_settings(stack.settings), Storage.from_settings(stack.settings)
    accepted: list[str] = []
    whole = Stopwatch()
    # S3 goes while the first half is queued and running
    _submit_jobs(stack, burst // 2, accepted)
    until(lambda: store.running_count() > 0, 300, "a job running")

    own_s3.stop()
    outage = Stopwatch()
    refused = 0
    while outage() < OUTAGE_S:  # the outage lasts as long as the issue says; submits go on meanwhile
        r = submit(stack.base_url, tom_jpeg())
        assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable", r.text
        assert int(r.headers["Retry-After"]) > 0
        refused += 1
    restarted = SeaweedS3Server.start(own_s3.workdir, port=own_s3.port,
                                      access_key=own_s3.access_key, secret_key=own_s3.secret_key)
    try:
        _submit_jobs(stack, burst - burst // 2, accepted)
        until(lambda: not unfinished(store, accepted), 600, "every accepted job finished")
        failed = [r for r in records(store, accepted) if r.status is not JobStatus.SUCCEEDED]
        assert failed == [], [(r.request_id, r.status.value, r.error) for r in failed]
        # the sweep deletes what a job's end could not while S3 was down
        until(lambda: uploads_left(storage) == [], 120, "no face upload left")
        worker_log = (stack.log_dir / "gpu0.log").read_text(errors="replace")
        assert "is unreachable" in worker_log, "the outage never reached the worker"
    finally:
        restarted.stop()
    print(f"\nS3 down {OUTAGE_S} s in a burst of {burst}: {len(accepted)} accepted, {len(accepted)} succeeded, "
          f"0 failed, 0 uploads left; {refused} submits during the outage answered 503; test {whole():.0f} s")
