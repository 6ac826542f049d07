"""The gate of the submit path (``api.submit.submit_job``, step 2): the webhook URL's addresses
(SSRF), the key's default webhook URL, ``Idempotency-Key`` replay, and the key's cap on unfinished
jobs. ``admit`` takes the claims; ``release`` gives them back when a later step fails, so a refused
or failed submit leaves no claim behind. A release that fails (Valkey is down: the very outage that
refused the submit) is owed and settled by the next ``admit`` once Valkey answers again, instead of
holding the key's slot until the lazy sweep frees it.

Example::

    admitted = admission.admit(key, idempotency_key, form.fields, form.images, request_id)
    admitted.replay            # the earlier job's record when the key and body were seen before
    admission.release(admitted)  # a later step failed
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field

import redis

from shared.access.api_keys import ApiKey
from shared.access.idempotency import IdempotencyStore, request_fingerprint
from shared.access.rate_limit import RateLimiter
from shared.errors import ErrorCode, IdentityBodyError
from shared.jobs.record import JobRecord
from shared.jobs.retention import Retention
from shared.jobs.store import JobStore
from shared.settings import Settings
from shared.url_guard import check_webhook_url

log = logging.getLogger(__name__)

# releases owed at once (each a few dozen bytes); past it the oldest is left to the lazy sweep
MAX_OWED_RELEASES = 10_000


@dataclass(frozen=True)
class Admitted:
    request_id: str
    owner: str | None
    idempotency_key: str | None
    replay: JobRecord | None = None  # an earlier request with the same Idempotency-Key and body made it


@dataclass
class Admission:
    settings: Settings
    store: JobStore
    limiter: RateLimiter
    idempotency: IdempotencyStore
    retention: Retention
    owed: deque[Admitted] = field(default_factory=lambda: deque(maxlen=MAX_OWED_RELEASES))
    _settling: threading.Lock = field(default_factory=threading.Lock)

    def webhook_url_for(self, key: ApiKey | None, form_url: str | None) -> str | None:
        """The job's webhook URL (the form's, else the key's default), refused (422
        webhook_url_refused) when its shape is wrong or its host is a non-public literal address.
        Host names are not resolved here; delivery resolves, checks and pins (shared.url_guard)."""
        url = form_url or (key.webhook_url if key is not None else None)
        if not url:
            return None
        return check_webhook_url(url, self.settings.webhook_allow_hosts)

    def admit(self, key: ApiKey | None, idempotency_key: str | None, fields: list[tuple[str, str]],
              uploads: list[bytes] | bytes, request_id: str, pose_upload: bytes | None = None) -> Admitted:
        """Claim the idempotency key (or find the earlier job) and a slot of the key's cap."""
        self.settle_owed()
        owner = key.id if key is not None else None
        if idempotency_key is not None:
            fingerprint = request_fingerprint(_field_map(fields), uploads, pose_upload)
            earlier = self.idempotency.claim(owner, idempotency_key, fingerprint, request_id)
            if earlier is not None:
                return Admitted(earlier, owner, None, replay=self._earlier_record(earlier))
        admitted = Admitted(request_id, owner, idempotency_key)
        if key is not None:
            try:
                self.limiter.claim_job_slot(key.id, request_id, key.max_queued_jobs)
            except BaseException:
                self.release(admitted)
                raise
        return admitted

    def release(self, admitted: Admitted) -> None:
        """Give back what ``admit`` claimed (a later step failed); owed when Valkey is down."""
        try:
            self._release(admitted)
        except redis.RedisError as exc:
            log.warning("releasing the claims of refused job %s failed (%s); retried on the next submit",
                        admitted.request_id, type(exc).__name__)
            self.owed.append(admitted)

    def settle_owed(self) -> None:
        """Release what failed to be released before; stops at the first failure (still down)."""
        if not self.owed or not self._settling.acquire(blocking=False):
            return
        try:
            while self.owed:
                admitted = self.owed[0]
                try:
                    self._release(admitted)
                except redis.RedisError:
                    return
                self.owed.popleft()
        finally:
            self._settling.release()

    def _release(self, admitted: Admitted) -> None:
        if admitted.owner is not None:
            self.limiter.release_job_slot(admitted.owner, admitted.request_id)
        if admitted.idempotency_key is not None:
            self.idempotency.release(admitted.owner, admitted.idempotency_key, admitted.request_id)

    def accepted(self, record: JobRecord) -> None:
        """The job exists: its uploads are tracked for the retention sweep."""
        for key in record.upload_keys:
            self.retention.track_upload(key, record.created_at)

    def _earlier_record(self, request_id: str) -> JobRecord:
        record = self.store.get(request_id)
        if record is None:
            # a concurrent twin claimed the key and is still writing the job (or it has expired):
            # 409, as the IETF Idempotency-Key draft asks for a request still being processed
            raise IdentityBodyError(
                ErrorCode.IDEMPOTENCY_IN_PROGRESS,
                "A request with this Idempotency-Key is still being accepted; retry in a moment.",
                retry_after_s=1,
            )
        return record


def _field_map(fields: list[tuple[str, str]]) -> dict[str, str]:
    return {name: value.strip() for name, value in fields if value.strip() != ""}
