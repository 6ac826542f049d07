"""Micro-batching on real processes: a gpu worker started by ``idbody worker`` with the fast engine
(forced on, on the CPU) runs Celery's threads pool, and single-image jobs submitted together
share a denoise pass — each still its own job: its own images, its own cancel."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from idbody.stack.servers import free_port
from idbody.stack.service import ServiceStack, running_stack, stack_settings
from shared.jobs.store import JobStore
from tests.e2e.finished_job import SUBMIT, job_end
from tests.e2e.limits import measure_limits
from tests.face_photos import tom_jpeg

pytestmark = pytest.mark.integration

FIELDS = {"num_images": "1", "width": "128", "height": "128", "num_inference_steps": "2", "face_detail": "false"}
SLOTS = 3


@pytest.fixture(scope="module")
def stack(valkey, s3_server, tmp_path_factory, tiny_engine):
    limits = measure_limits(tiny_engine)
    settings = stack_settings(
        valkey, s3_server, 14, "batch", tiny_model_dir=tmp_path_factory.getbasetemp() / "tiny-models",
        model_profile="tiny", auth_disabled=True, device="cpu", engine_fast="on", micro_batching=True,
        max_batch_images=SLOTS, batch_window_ms=5000, worker_metrics_port=free_port(), **limits.settings())
    with running_stack(settings, tmp_path_factory.mktemp("batch-logs"), io_worker=None) as running:
        running.limits = limits
        yield running


def metric(stack: ServiceStack, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.settings.worker_metrics_port}/metrics", timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.split(" ")[0] == name]
    return values[0] if values else 0.0


def submit(stack: ServiceStack, seed: int) -> str:
    resp = httpx.post(stack.base_url + SUBMIT, data={**FIELDS, "seed": str(seed)},
                      files={"face_image": ("me.jpg", tom_jpeg(), "image/jpeg")}, timeout=90)
    assert resp.status_code == 202, resp.text
    return resp.json()["request_id"]


def finished(stack: ServiceStack, request_id: str) -> dict:
    return job_end(f"{stack.base_url}/api/v1/jobs/{request_id}", stack.limits.soft_s * 2)


def seeds(stack: ServiceStack, request_id: str) -> list[int]:
    result = httpx.get(f"{stack.base_url}/api/v1/jobs/{request_id}/result", timeout=10).json()
    return [image["seed"] for image in result["images"]]


def test_the_worker_says_how_many_images_a_pass_takes_in_its_heartbeat(stack):
    (worker,) = JobStore.from_settings(stack.settings).live_workers()
    assert worker["max_batch_images"] == SLOTS and worker["pipeline_loaded"] is True


def test_jobs_submitted_together_share_a_pass_and_each_gets_its_images(stack):
    passes_before = metric(stack, "idbody_micro_batch_jobs_count")
    with ThreadPoolExecutor(SLOTS) as pool:
        ids = list(pool.map(lambda seed: submit(stack, seed), (101, 202, 303)))
    bodies = [finished(stack, rid) for rid in ids]
    assert [b["status"] for b in bodies] == ["succeeded"] * 3, bodies
    assert [seeds(stack, rid) for rid in ids] == [[101], [202], [303]]
    passes = metric(stack, "idbody_micro_batch_jobs_count") - passes_before
    assert 1 <= passes < 3, f"{passes} denoise passes for 3 jobs of one shape: none was shared"


def test_a_canceled_job_ends_alone_and_its_batch_mate_succeeds(stack):
    keep, drop = submit(stack, 404), submit(stack, 505)
    httpx.post(f"{stack.base_url}/api/v1/jobs/{drop}/cancel", timeout=10)
    assert finished(stack, drop)["status"] == "canceled"
    body = finished(stack, keep)
    assert body["status"] == "succeeded" and seeds(stack, keep) == [404]
