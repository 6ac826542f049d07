"""``Client``: submit a photo, wait for the job, read or download its result, cancel it.

The client speaks the API's conventions: ``Prefer: wait=N`` long polls (the server holds the status
request until the job ends), then plain polling with backoff when the server declines to hold it;
``Retry-After`` is honoured; every error answer becomes an ``ApiError`` with the stable ``code``.

Example::

    with Client("http://127.0.0.1:8000") as client:
        job = client.submit("user_photo.jpg", body_type="athletic", num_images=1, width=256, height=256)
        # or several photos of the same person (1-5): client.submit(["front.jpg", "side.jpg"], ...)
        # base_model="juggernaut" picks a base checkpoint the server lists in /api/v1/info
        posed = client.submit("user_photo.jpg", pose_image="dancer.jpg")   # the pose of the person in it
        result = client.wait(job, timeout=300)
        if result.success:
            client.download(result, "out/")        # out/identity_body_0.png ...
        else:
            print(result.error.code, result.error.message)
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Self

import httpx

from identity_body_client.models import Job, Result

API = "/api/v1"
LONG_POLL_MAX_S = 60       # the server clamps Prefer: wait to its own max_wait_s anyway
BACKOFF_START_S = 0.5
BACKOFF_FACTOR = 1.6
BACKOFF_MAX_S = 5.0

Photo = str | Path | bytes | BinaryIO
JobRef = Job | str


class ApiError(Exception):
    """An error answer: HTTP status plus the API's stable ``code``, ``message`` and ``field``."""

    def __init__(self, status_code: int, code: str, message: str, field: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s

    @classmethod
    def from_response(cls, resp: httpx.Response) -> ApiError:
        try:
            error = resp.json().get("error") or {}
        except ValueError:
            error = {}
        return cls(resp.status_code, error.get("code") or f"http_{resp.status_code}",
                   error.get("message") or resp.text[:200], error.get("field"), _retry_after(resp))


class WaitTimeout(TimeoutError):
    """``wait`` ran out of time; ``job`` is the last status seen."""

    def __init__(self, job: Job, timeout_s: float) -> None:
        super().__init__(f"job {job.request_id} still {job.status.value} after {timeout_s:g} s")
        self.job = job


class Client:
    """One connection pool to one identity-body server. ``api_key``: None when auth is off."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = 30.0,
                 http: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.Client(timeout=timeout_s + LONG_POLL_MAX_S)
        if api_key:
            self._http.headers["Authorization"] = f"Bearer {api_key}"

    def submit(self, photo: Photo | list[Photo], *, webhook_url: str | None = None,
               idempotency_key: str | None = None, pose_image: Photo | None = None, **params: Any) -> Job:
        """Upload ``photo`` (or a list of 1-5 photos of the same person, combined into one identity)
        with generation ``params`` (the form fields: body_type, height_cm, ..., num_images, mode,
        seed, width, height) and, optionally, ``pose_image``: a photo of anyone in the wanted pose
        (it replaces ``pose``; the result's ``pose_source`` says "photo"). The server checks them
        and answers the queued job."""
        photos = list(photo) if isinstance(photo, (list, tuple)) else [photo]
        fields = {k: _form_value(v) for k, v in params.items() if v is not None}
        if webhook_url:
            fields["webhook_url"] = webhook_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        files = [("face_image", _photo_part(p)) for p in photos]  # the field repeated, once per photo
        if pose_image is not None:
            files.append(("pose_image", _photo_part(pose_image)))
        resp = self._http.post(f"{self.base_url}{API}/generate-identity-body", data=fields, headers=headers,
                               files=files)
        return Job.from_json(_ok(resp))

    def status(self, job: JobRef, wait_s: int | None = None) -> Job:
        """The job's status now, or after holding up to ``wait_s`` seconds for it to finish."""
        headers = {"Prefer": f"wait={int(wait_s)}"} if wait_s else {}
        return Job.from_json(_ok(self._http.get(self._job_url(job), headers=headers)))

    def wait(self, job: JobRef, timeout: float = 600.0) -> Result:
        """Until the job finishes (then its Result, ``success`` False when it failed or was
        canceled) or ``timeout`` seconds pass (WaitTimeout). Long polls with ``Prefer: wait``; when
        the server does not hold the request, polls with backoff and its ``Retry-After``."""
        deadline = time.monotonic() + timeout
        backoff = BACKOFF_START_S
        while True:
            remaining = deadline - time.monotonic()
            wait_s = max(1, min(LONG_POLL_MAX_S, int(remaining)))
            resp = self._http.get(self._job_url(job), headers={"Prefer": f"wait={wait_s}"})
            current = Job.from_json(_ok(resp))
            if current.status.finished:
                return self.result(current)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(current, timeout)
            if "preference-applied" not in resp.headers:
                pause = max(backoff, _retry_after(resp) or 0.0)
                time.sleep(min(pause, remaining))
                backoff = min(backoff * BACKOFF_FACTOR, BACKOFF_MAX_S)

    def result(self, job: JobRef) -> Result:
        """The finished job's result (ApiError ``job_not_finished`` while it runs)."""
        return Result.from_json(_ok(self._http.get(f"{self._job_url(job)}/result")))

    def cancel(self, job: JobRef) -> Job:
        """Cancel a queued or running job (ApiError ``job_already_finished`` once it ended)."""
        return Job.from_json(_ok(self._http.post(f"{self._job_url(job)}/cancel")))

    def delete(self, job: JobRef) -> None:
        """Delete the job's upload, images and record now."""
        _ok(self._http.delete(self._job_url(job)))

    def jobs(self, page_size: int = 20) -> Iterator[Job]:
        """This caller's jobs, newest first, following the list's cursors."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            page = _ok(self._http.get(f"{self.base_url}{API}/jobs", params=params))
            yield from (Job.from_json(item) for item in page["jobs"])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def download(self, result: Result, directory: str | Path) -> list[Path]:
        """Save the result's images under their file names (``<directory>/identity_body_0.png``, or
        ``.jpg``/``.webp`` for those output formats); returns the paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for image in result.images:
            # presigned URLs carry their own credentials: no Authorization header to the object store
            resp = httpx.get(image.url, timeout=self._http.timeout)
            resp.raise_for_status()
            path = out / Path(image.file_name or f"{image.id}.png").name
            path.write_bytes(resp.content)
            paths.append(path)
        return paths

    def _job_url(self, job: JobRef) -> str:
        request_id = job.request_id if isinstance(job, Job) else str(job)
        return f"{self.base_url}{API}/jobs/{request_id}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ok(resp: httpx.Response) -> dict[str, Any]:
    if resp.status_code >= 400:
        raise ApiError.from_response(resp)
    return resp.json()


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _photo_part(photo: Photo) -> tuple[str, bytes, str]:
    """(file name, bytes, media type) of one photo's multipart part."""
    if isinstance(photo, bytes):
        name, data = "photo.jpg", photo
    elif isinstance(photo, (str, Path)):
        name, data = Path(photo).name, Path(photo).read_bytes()
    else:
        name, data = Path(getattr(photo, "name", "photo.jpg")).name, photo.read()
    return name, data, mimetypes.guess_type(name)[0] or "application/octet-stream"
