"""``identity_body_client.verify_webhook`` (stdlib only) accepts exactly what the server's signer
(``worker.webhooks.signing``, the standardwebhooks package) produces."""

from __future__ import annotations

import time

import pytest

from identity_body_client import WebhookVerificationError, verify_webhook
from shared.access.api_keys import new_webhook_secret
from worker.webhooks.signing import sign_webhook

BODY = b'{"request_id": "r1", "status": "succeeded"}'


def test_verifies_the_servers_signature_in_any_header_case():
    secret = new_webhook_secret()
    headers = {k.title(): v for k, v in sign_webhook(secret, "msg_1", BODY).items()}
    assert verify_webhook(BODY, headers, secret) == {"request_id": "r1", "status": "succeeded"}
    assert verify_webhook(BODY.decode(), headers, secret)["status"] == "succeeded"


def test_one_matching_signature_among_several_is_enough():
    old, new = new_webhook_secret(), new_webhook_secret()
    headers = sign_webhook(new, "msg_1", BODY)
    headers["webhook-signature"] = sign_webhook(old, "msg_1", BODY)["webhook-signature"] + " " + headers["webhook-signature"]
    assert verify_webhook(BODY, headers, new)["request_id"] == "r1"


@pytest.mark.parametrize("change", ["body", "id", "secret", "old", "missing", "garbled-secret"])
def test_refuses_anything_else(change):
    secret = new_webhook_secret()
    headers = sign_webhook(secret, "msg_1", BODY, timestamp=int(time.time()))
    body = BODY
    if change == "body":
        body = BODY.replace(b"succeeded", b"failed")
    elif change == "id":
        headers["webhook-id"] = "msg_2"
    elif change == "secret":
        secret = new_webhook_secret()
    elif change == "old":
        headers = sign_webhook(secret, "msg_1", BODY, timestamp=int(time.time()) - 3600)
    elif change == "missing":
        del headers["webhook-signature"]
    elif change == "garbled-secret":
        secret = "whsec_not base64!"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, secret)
