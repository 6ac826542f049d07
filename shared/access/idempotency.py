"""``Idempotency-Key``: the same key and the same request body within the TTL (24 h by default) return
the job the first request created; the same key with a different body is refused (422).

The body's fingerprint is a SHA-256 over the form fields (sorted, canonical JSON) and the uploaded
bytes. The claim is one ``SET NX``, so two identical requests racing each other create one job:
the loser gets the winner's request id (whose record may still be being written).

Keys::

    idempotency:{owner}:{sha256(idempotency key)}   JSON {"fingerprint", "request_id"}

Example::

    idem = IdempotencyStore(redis_client, ttl_s=86400)
    fp = request_fingerprint({"body_type": "slim"}, upload_bytes)
    existing = idem.claim(owner, header_value, fp, new_request_id)   # None: go ahead and create
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis

from shared.errors import ErrorCode, IdentityBodyError

KEY = "idempotency:{}:{}"
MAX_KEY_LENGTH = 255


def request_fingerprint(fields: dict[str, Any], uploads: bytes | list[bytes],
                        pose_upload: bytes | None = None) -> str:
    """Hex SHA-256 of the form fields, the face photos in the order sent and the optional pose
    photo; field order does not matter. One face photo (bytes or a list of one) and no pose photo
    give the fingerprint a one-photo request always gave.

    Example::

        request_fingerprint({"a": "1", "b": "2"}, b"x") == request_fingerprint({"b": "2", "a": "1"}, [b"x"])
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8"))
    digest.update(b"\x00")
    for upload in [uploads] if isinstance(uploads, bytes) else uploads:
        digest.update(hashlib.sha256(upload).digest())
    if pose_upload is not None:
        digest.update(b"\x00pose\x00")
        digest.update(hashlib.sha256(pose_upload).digest())
    return digest.hexdigest()


def validate_key(value: str) -> str:
    """The header value, or IdentityBodyError(invalid_parameter) when empty, too long or not printable."""
    value = value.strip()
    if not value or len(value) > MAX_KEY_LENGTH or not value.isprintable():
        raise IdentityBodyError(
            ErrorCode.INVALID_PARAMETER,
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters (a UUID is a good choice).",
            field="Idempotency-Key",
        )
    return value


class IdempotencyStore:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = int(ttl_s)

    def _key(self, owner: str | None, idempotency_key: str) -> str:
        hashed = hashlib.sha256(validate_key(idempotency_key).encode("utf-8")).hexdigest()
        return KEY.format(owner or "-", hashed)

    def claim(self, owner: str | None, idempotency_key: str, fingerprint: str, request_id: str) -> str | None:
        """Claim ``idempotency_key`` for a new job ``request_id``.

        Returns None when claimed (create the job), the earlier request id when the same body was
        sent before, and raises IdentityBodyError(idempotency_mismatch) for a different body.
        """
        key = self._key(owner, idempotency_key)
        value = json.dumps({"fingerprint": fingerprint, "request_id": request_id})
        if self.client.set(key, value, nx=True, ex=self.ttl_s):
            return None
        raw = self.client.get(key)
        if raw is None:  # expired between the two calls: try once more
            return None if self.client.set(key, value, nx=True, ex=self.ttl_s) else self.claim(
                owner, idempotency_key, fingerprint, request_id)
        earlier = json.loads(raw)
        if earlier["fingerprint"] != fingerprint:
            raise IdentityBodyError(
                ErrorCode.IDEMPOTENCY_MISMATCH,
                "This Idempotency-Key was already used with a different request body; use a new key "
                "for a new request.",
                field="Idempotency-Key",
            )
        return str(earlier["request_id"])

    def release(self, owner: str | None, idempotency_key: str, request_id: str) -> None:
        """Give the key back when creating ``request_id`` failed, so a retry can succeed."""
        key = self._key(owner, idempotency_key)
        raw = self.client.get(key)
        if raw is not None and json.loads(raw)["request_id"] == request_id:
            self.client.delete(key)
