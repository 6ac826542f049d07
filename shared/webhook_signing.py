"""Standard Webhooks signatures: ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` with a ``whsec_<base64>`` secret.

Signing goes through the maintained ``standardwebhooks`` package so receivers can verify with the
same library in any language; this module only adds secret generation and header assembly.

Example::

    secret = new_webhook_secret()                      # "whsec_..."
    headers = sign_webhook(secret, "evt_1", body)      # dict of the three headers
    Webhook(secret).verify(body, headers)              # what a receiver does
"""

from __future__ import annotations

import base64
import secrets
import time
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24-64 random bytes


def new_webhook_secret() -> str:
    """A fresh random secret in the spec's ``whsec_<base64>`` form.

    Example::

        new_webhook_secret()   # 'whsec_3q2+7w...'
    """
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def sign_webhook(secret: str, message_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``.

    ``message_id`` must stay the same across retries of one event so receivers can de-duplicate.

    Example::

        sign_webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_1", b'{"a":1}', 1614265330)
    """
    ts = int(time.time()) if timestamp is None else int(timestamp)
    when = datetime.fromtimestamp(ts, tz=timezone.utc)
    signature = Webhook(secret).sign(msg_id=message_id, timestamp=when, data=body.decode("utf-8"))
    return {"webhook-id": message_id, "webhook-timestamp": str(ts), "webhook-signature": signature}
