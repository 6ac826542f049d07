import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.access.api_keys import new_webhook_secret
from worker.webhooks.signing import sign_webhook


def _hand_signature(secret: str, msg_id: str, ts: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def test_secret_has_prefix_and_32_random_bytes():
    a, b = new_webhook_secret(), new_webhook_secret()
    assert a.startswith("whsec_") and a != b
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 32


def test_signature_matches_hand_computation_of_the_spec():
    secret = new_webhook_secret()
    body = '{"request_id":"r1","status":"succeeded","note":"café"}'.encode()
    headers = sign_webhook(secret, "r1:succeeded", body, timestamp=1_700_000_000)
    assert headers["webhook-id"] == "r1:succeeded"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"] == _hand_signature(secret, "r1:succeeded", "1700000000", body)


def test_spec_example_vector():
    # the example published with the Standard Webhooks specification
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = sign_webhook(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", body, timestamp=1614265330)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_package_verifier_accepts_and_rejects():
    secret = new_webhook_secret()
    body = b'{"request_id":"r2","status":"failed"}'
    headers = sign_webhook(secret, "r2:failed", body)
    assert Webhook(secret).verify(body, headers) == {"request_id": "r2", "status": "failed"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"failed", b"succeeded"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(body, headers)
    stale = sign_webhook(secret, "r2:failed", body, timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, stale)
