import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.access.idempotency import IdempotencyStore, request_fingerprint
from shared.errors import ErrorCode, IdentityBodyError


def test_fingerprint_covers_fields_and_upload_not_order():
    a = request_fingerprint({"body_type": "slim", "num_images": "2"}, b"img")
    assert a == request_fingerprint({"num_images": "2", "body_type": "slim"}, b"img")
    assert a != request_fingerprint({"body_type": "slim", "num_images": "3"}, b"img")
    assert a != request_fingerprint({"body_type": "slim", "num_images": "2"}, b"img2")


def test_replay_returns_original_and_mismatch_is_refused(redis_client):
    idem = IdempotencyStore(redis_client, ttl_s=86400)
    fp = request_fingerprint({"x": 1}, b"a")
    assert idem.claim("key_a", "k1", fp, "r1") is None
    assert idem.claim("key_a", "k1", fp, "r2") == "r1"
    with pytest.raises(IdentityBodyError) as info:
        idem.claim("key_a", "k1", request_fingerprint({"x": 2}, b"a"), "r3")
    assert info.value.code == ErrorCode.IDEMPOTENCY_MISMATCH and info.value.http_status == 422
    assert idem.claim("key_b", "k1", fp, "r4") is None  # keys are per API key
    assert 86000 < redis_client.ttl(next(iter(redis_client.scan_iter("idempotency:key_a:*")))) <= 86400


def test_concurrent_identical_requests_create_one_job(redis_client):
    idem = IdempotencyStore(redis_client, ttl_s=600)
    fp = request_fingerprint({}, b"same")
    ids = [uuid.uuid4().hex for _ in range(16)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda rid: idem.claim(None, "race", fp, rid), ids))
    winners = [rid for rid, answer in zip(ids, answers) if answer is None]
    assert len(winners) == 1
    assert {a for a in answers if a is not None} == {winners[0]}


def test_release_after_failed_create(redis_client):
    idem = IdempotencyStore(redis_client, ttl_s=600)
    assert idem.claim(None, "k", "fp", "r1") is None
    idem.release(None, "k", "other")  # not ours: kept
    assert idem.claim(None, "k", "fp", "r2") == "r1"
    idem.release(None, "k", "r1")
    assert idem.claim(None, "k", "fp", "r2") is None


@pytest.mark.parametrize("bad", ["", "   ", "x" * 256, "a\nb"])
def test_bad_keys_refused(redis_client, bad):
    with pytest.raises(IdentityBodyError) as info:
        IdempotencyStore(redis_client, 60).claim(None, bad, "fp", "r")
    assert info.value.code == ErrorCode.INVALID_PARAMETER
