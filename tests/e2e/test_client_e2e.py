"""The Python client (``identity_body_client``) against the whole stack as real processes: the
gateway with auth on, a GPU worker on the tiny profile, an io worker delivering webhooks, Valkey,
SeaweedFS and a webhook receiver on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from idbody.stack.polling import until
from idbody.stack.service import running_stack, stack_settings
from identity_body_client import (
    ApiError,
    Client,
    JobStatus,
    WebhookVerificationError,
    verify_webhook,
)
from shared.access.api_keys import ApiKeyStore
from shared.jobs.store import JobStore
from tests.image_samples import uniform_jpeg
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

PHOTO = Path(__file__).resolve().parents[2] / "docs" / "examples" / "face.jpg"
SMALL = {"num_images": 2, "width": 128, "height": 128, "num_inference_steps": 2}
# a job of SMALL finishes in well under a second of denoising on two busy cores; the deadline
# covers a worker that is still loading and a machine that is shared
JOB_DEADLINE_S = 120


@pytest.fixture(scope="module")
def stack(valkey, s3_server, tmp_path_factory):
    settings = stack_settings(
        valkey, s3_server, 13, "client", tiny_model_dir=tmp_path_factory.getbasetemp() / "tiny-models",
        model_profile="tiny", device="cpu", auth_disabled=False, webhook_allow_hosts=["127.0.0.1"],
        webhook_backoff_base_s=0.2,
    )
    with running_stack(settings, tmp_path_factory.mktemp("client-e2e-logs")) as s:
        yield s


@pytest.fixture
def key(stack):
    return ApiKeyStore(JobStore.from_settings(stack.settings).client).create("client-e2e", 600, 10)


@pytest.fixture
def client(stack, key):
    with Client(stack.base_url, api_key=key.token) as c:
        yield c


def test_submit_wait_download(client, tmp_path):
    job = client.submit(PHOTO, body_type="athletic", height_cm=170, gender="female", seed=7, output_format="webp",
                        style="film-noir", base_model="tiny-alt", **SMALL)
    assert job.status is JobStatus.QUEUED and job.request_id
    result = client.wait(job, timeout=JOB_DEADLINE_S)
    assert result.success and result.request_id == job.request_id and result.count == 2
    assert [im.id for im in result.images] == ["identity_body_0", "identity_body_1"]  # as the docs say
    assert result.analysis["face"]["face_count"] >= 1
    assert [(im.content_type, im.nsfw) for im in result.images] == [("image/webp", False)] * 2
    assert (result.identity_judge, result.safety_check) == ("dlib-resnet", "nudenet-320n")
    assert result.base_model == "tiny-alt"
    paths = client.download(result, tmp_path / "out")
    assert [p.name for p in paths] == ["identity_body_0.webp", "identity_body_1.webp"]
    assert all(Image.open(p).size == (128, 128) and Image.open(p).format == "WEBP" for p in paths)
    assert next(client.jobs()).request_id == job.request_id  # newest first
    assert client.status(job).status is JobStatus.SUCCEEDED


def test_failed_job_and_refused_parameters(client):
    result = client.wait(client.submit(uniform_jpeg(), **SMALL), timeout=JOB_DEADLINE_S)
    assert not result.success and result.error.code == "no_face_detected" and result.images == []
    with pytest.raises(ApiError) as refused:
        client.submit(PHOTO, height_cm=20)
    assert refused.value.status_code == 422 and refused.value.code == "invalid_parameter"
    assert refused.value.field == "height_cm"


def test_cancel_queued_and_running_jobs(client):
    # the first job keeps the one worker busy, so the second is still queued when canceled
    long_job = client.submit(PHOTO, num_images=1, width=256, height=256, mode="quality", num_inference_steps=100)
    queued = client.submit(PHOTO, **SMALL)
    assert client.cancel(queued).status is JobStatus.CANCELED
    until(lambda: client.status(long_job).status is JobStatus.RUNNING, JOB_DEADLINE_S, "the long job to start")
    assert client.cancel(long_job).status is JobStatus.CANCELED
    for job in (queued, long_job):
        result = client.wait(job, timeout=10)
        assert not result.success and result.error.code == "job_canceled"
    with pytest.raises(ApiError) as again:
        client.cancel(queued)
    assert again.value.code == "job_already_finished" and again.value.status_code == 409


def test_webhook_verifies_with_the_keys_secret(client, key):
    receiver = Receiver()
    try:
        job = client.submit(PHOTO, webhook_url=receiver.url(), **SMALL)
        assert client.wait(job, timeout=JOB_DEADLINE_S).success
        delivered = until(lambda: receiver.requests, JOB_DEADLINE_S, "the webhook")[0]
    finally:
        receiver.close()
    payload = verify_webhook(delivered.body, delivered.headers, key.key.webhook_secret)
    assert payload["request_id"] == job.request_id and payload["status"] == "succeeded"
    tampered = json.dumps({**payload, "status": "failed"}).encode()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(tampered, delivered.headers, key.key.webhook_secret)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(delivered.body, delivered.headers, key.key.webhook_secret, now=0)  # a replay, years later
