"""A submit refused because Valkey went down gives its claims back once Valkey is back: the key's
unfinished-job slot and its Idempotency-Key are released by the next submit, not held until the
lazy sweep. Valkey here is the test's own, stopped with SIGTERM and restarted on its port and
append-only file."""

from __future__ import annotations

import pytest
import redis

from api.admission import Admission
from idbody.stack.servers import ValkeyServer
from shared.access.api_keys import ApiKeyStore
from shared.access.idempotency import IdempotencyStore
from shared.access.rate_limit import RateLimiter
from shared.jobs.retention import Retention
from shared.jobs.store import JobStore
from shared.settings import Settings

pytestmark = pytest.mark.integration


def _admission(client: redis.Redis) -> Admission:
    settings = Settings(_env_file=None)
    store = JobStore(client, retention_s=3600)
    return Admission(settings=settings, store=store, limiter=RateLimiter(client, stale_after_s=3600),
                     idempotency=IdempotencyStore(client, 3600),
                     retention=Retention(client, None, store, 3600, 3600))


def test_claims_of_a_submit_refused_in_an_outage_are_released_when_valkey_is_back(tmp_path):
    valkey = ValkeyServer.start(tmp_path / "valkey", appendonly=True)
    try:
        client = redis.Redis.from_url(valkey.url, socket_connect_timeout=2)
        admission = _admission(client)
        key = ApiKeyStore(client).create("k", rate_limit_per_min=1000, max_queued_jobs=5).key
        refused = admission.admit(key, "idem-1", [("gender", "female")], b"photo", "job-refused")
        assert admission.limiter.active_jobs(key.id) == 1

        valkey.stop()  # the outage that makes the submit's next step fail
        admission.release(refused)  # must not raise: the submit answers its 503, the release is owed
        assert list(admission.owed) == [refused]

        valkey = ValkeyServer.start(valkey.workdir, port=valkey.port, appendonly=True)
        assert admission.limiter.active_jobs(key.id) == 1  # still held: nothing could release it
        admission.admit(key, None, [("gender", "female")], b"photo", "job-next")
        assert not admission.owed
        assert admission.limiter.active_jobs(key.id) == 1  # only the new job's slot
        # the Idempotency-Key is free again: the same key and body create a job, not a replay
        again = admission.admit(key, "idem-1", [("gender", "female")], b"photo", "job-retry")
        assert again.replay is None and again.request_id == "job-retry"
    finally:
        valkey.stop()
