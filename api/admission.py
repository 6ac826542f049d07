"""The gate in front of ``accept_job``: the webhook URL's addresses (SSRF), the key's default
webhook URL, ``Idempotency-Key`` replay, and the key's cap on unfinished jobs — each undone if a
later step fails, so a refused or failed submit leaves no claim behind.

Example::

    outcome = admission.admit(key, idempotency_key, form.fields, form.image, webhook_url,
                              accept=lambda rid, url: accept_job(..., request_id=rid, webhook_url=url))
    outcome.record, outcome.replayed
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from shared.api_keys import ApiKey
from shared.errors import ErrorCode, IdentityBodyError
from shared.idempotency import IdempotencyStore, request_fingerprint
from shared.job_record import JobRecord
from shared.job_store import JobStore
from shared.rate_limit import RateLimiter
from shared.retention import Retention
from shared.settings import Settings
from shared.url_guard import Resolver, WebhookResolutionError, resolve_webhook_target, system_resolver


@dataclass(frozen=True)
class Admitted:
    record: JobRecord
    replayed: bool  # True: an earlier request with the same Idempotency-Key and body created it


@dataclass
class Admission:
    settings: Settings
    store: JobStore
    limiter: RateLimiter
    idempotency: IdempotencyStore
    retention: Retention
    resolver: Resolver = system_resolver

    def webhook_url_for(self, key: ApiKey | None, form_url: str | None) -> str | None:
        """The job's webhook URL (the form's, else the key's default), refused (422
        webhook_url_refused) when its shape is wrong or it resolves to a non-public address."""
        url = form_url or (key.webhook_url if key is not None else None)
        if not url:
            return None
        try:
            resolve_webhook_target(url, self.settings.webhook_allow_hosts, self.resolver)
        except WebhookResolutionError:
            # a name that does not resolve now is not an address we refuse: DNS may be down for a
            # moment, and delivery checks (and pins) again before it connects
            pass
        return url

    def admit(
        self,
        key: ApiKey | None,
        idempotency_key: str | None,
        fields: list[tuple[str, str]],
        upload: bytes,
        webhook_url: str | None,
        accept: Callable[[str], JobRecord],
    ) -> Admitted:
        """Create the job through ``accept(request_id)`` unless an idempotent replay answers it."""
        owner = key.id if key is not None else None
        request_id = str(uuid.uuid4())
        if idempotency_key is not None:
            fingerprint = request_fingerprint(_field_map(fields), upload)
            earlier = self.idempotency.claim(owner, idempotency_key, fingerprint, request_id)
            if earlier is not None:
                return Admitted(self._earlier_record(earlier), replayed=True)
        try:
            if key is not None:
                self.limiter.claim_job_slot(key.id, request_id, key.max_queued_jobs)
            try:
                record = accept(request_id)
            except BaseException:
                if key is not None:
                    self.limiter.release_job_slot(key.id, request_id)
                raise
        except BaseException:
            if idempotency_key is not None:
                self.idempotency.release(owner, idempotency_key, request_id)
            raise
        if record.upload_key:
            self.retention.track_upload(record.upload_key, record.created_at)
        return Admitted(record, replayed=False)

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
