"""Verify a webhook the way Standard Webhooks defines it, with the standard library only.

The server signs ``"{webhook-id}.{webhook-timestamp}.{body}"`` with HMAC-SHA256 under the base64 key
in the ``whsec_...`` secret and sends ``webhook-signature: v1,<base64>`` (several space-separated
signatures may be present while a secret rotates). A timestamp too far from now is refused, so a
captured request cannot be replayed later.

Example::

    payload = verify_webhook(request_body, request_headers, secret="whsec_...")
    payload["status"], payload["request_id"]
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

TOLERANCE_S = 5 * 60
SECRET_PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """The webhook is not from the server holding the secret, or is too old or too new."""


def verify_webhook(body: bytes | str, headers: Mapping[str, str], secret: str,
                   tolerance_s: int = TOLERANCE_S, now: float | None = None) -> dict[str, Any]:
    """The JSON payload when the signature matches and the timestamp is within ``tolerance_s``;
    WebhookVerificationError otherwise. ``headers`` may use any letter case."""
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        sent_at = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a Unix time") from None
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance (replayed or clock skew)")
    expected = _sign(_key(secret), f"{msg_id}.{sent_at}.".encode() + raw)
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected.encode()):
            return json.loads(raw)
    raise WebhookVerificationError("no matching v1 signature")


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise WebhookVerificationError("the secret is not a whsec_<base64> secret") from None


def _sign(key: bytes, content: bytes) -> str:
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
