"""Standard Webhooks signatures: ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` with a ``whsec_<base64>`` secret.

Signing goes through the maintained ``standardwebhooks`` package so receivers can verify with the
same library in any language; this module only adds header assembly (secrets are minted with the API key, in
``shared.access.api_keys``).

Example::

    secret = new_webhook_secret()                      # "whsec_..." (shared.access.api_keys)
    headers = sign_webhook(secret, "evt_1", body)      # dict of the three headers
    Webhook(secret).verify(body, headers)              # what a receiver does
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook


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
