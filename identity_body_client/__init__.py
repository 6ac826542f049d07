"""A small Python client for the identity-body HTTP API. Needs only httpx (no torch, no server code).

Example::

    from identity_body_client import Client

    with Client("http://127.0.0.1:8000", api_key=None) as client:   # api_key: None with auth off
        job = client.submit("user_photo.jpg", body_type="athletic", height_cm=170, num_images=2)
        job = client.submit(["front.jpg", "side.jpg"], num_images=2)   # 1-5 photos of one person
        result = client.wait(job, timeout=600)
        paths = client.download(result, "out/")
"""

from identity_body_client.client import ApiError, Client, WaitTimeout
from identity_body_client.models import Job, JobError, JobStatus, Progress, Result, ResultImage
from identity_body_client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "ApiError", "Client", "Job", "JobError", "JobStatus", "Progress", "Result", "ResultImage",
    "WaitTimeout", "WebhookVerificationError", "verify_webhook",
]
