"""Submit one job to a running stack over real HTTP (the shipped test face) and wait for its end.

Example::

    result = finished_result(stack.base_url, {"num_images": "1", "base_model": "tiny-alt"})
    status = job_end(resp.json()["status_url"], deadline_s)   # any job already submitted
"""

from __future__ import annotations

import httpx

from idbody.stack.polling import until
from shared.jobs.record import FINISHED
from tests.face_photos import tom_jpeg

SUBMIT = "/api/v1/generate-identity-body"


def finished_result(base_url: str, fields: dict[str, str]) -> dict:
    """The result JSON of a job that succeeded (AssertionError with its status when it did not)."""
    resp = httpx.post(base_url + SUBMIT, data=fields, files={"face_image": ("me.jpg", tom_jpeg(), "image/jpeg")},
                      timeout=90)
    assert resp.status_code == 202, resp.text
    status = job_end(resp.json()["status_url"], 300)
    assert status["status"] == "succeeded", status
    return httpx.get(status["result_url"], timeout=10).json()


def job_end(status_url: str, deadline_s: float) -> dict:
    """The job's status JSON once it has ended (succeeded, failed or canceled)."""

    def ended() -> dict | None:
        body = httpx.get(status_url, timeout=10).json()
        return body if body["status"] in FINISHED else None

    return until(ended, deadline_s, f"the job at {status_url} to end")
