"""The links a webhook body carries: ``status_url`` and ``result_url`` on the public API base, and
for a succeeded job its images, presigned for the webhook's lifetime.

A receiver may act on any attempt of a delivery (one it answered 5xx to and kept, say) until the
last retry is over, and then still needs time to fetch. So each attempt's image URLs stay valid for
the rest of the retry schedule (every remaining attempt waiting the longest, ``webhook_backoff_cap_s``,
plus its timeout) and then for the usual ``s3_presign_expiry_s``; S3 caps presigned URLs at 7 days.
Each attempt renders the body afresh, so a later retry carries URLs that reach as far again.

Example::

    webhook_payload_with_links(record, "https://idbody.example.com", storage, settings)
    # {"request_id": ..., "status": "succeeded", "status_url": ..., "result_url": ...,
    #  "images": [{"id": "img_0", "url": "https://s3.../r1/identity_body_0.png?X-Amz-..."}]}
"""

from __future__ import annotations

from typing import Any

from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.views import job_urls
from worker.webhooks.delivery import webhook_payload

MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4's longest presigned lifetime


def webhook_links_ttl_s(settings: Any, attempts_made: int) -> int:
    """Seconds the image URLs of the next attempt stay valid (see the module docstring).

    Example::

        webhook_links_ttl_s(Settings(), attempts_made=0)   # 3600 + 8 * (900 + 10) = 10880
    """
    remaining = max(0, settings.webhook_max_attempts - attempts_made)
    window = remaining * (settings.webhook_backoff_cap_s + settings.webhook_timeout_s)
    return int(min(MAX_PRESIGN_S, settings.s3_presign_expiry_s + window))


def webhook_payload_with_links(record: JobRecord, base_url: str, storage: Any, settings: Any) -> dict[str, Any]:
    """The webhook body: the status JSON, both job URLs, and the images of a succeeded job."""
    payload = webhook_payload(record, base_url)
    urls = job_urls(base_url, record.request_id)
    payload["status_url"] = urls["status_url"]
    payload["result_url"] = urls["result_url"]
    if record.status is JobStatus.SUCCEEDED and record.result is not None:
        ttl = webhook_links_ttl_s(settings, len(record.webhook_attempts))
        payload["images"] = [{"id": image.id, "url": storage.result_url(image.key, ttl)}
                             for image in record.result.images]
    return payload
