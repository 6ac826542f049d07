"""Stop Valkey in the middle of a burst of keyed submits and status polls: while it is down every
answer is 503 ``service_unavailable`` with Retry-After (the API-key lookup included, never a 500);
afterwards every accepted job exists and succeeds, no record exists that was not accepted, and
the key holds no slot. Valkey here is the test's own, with an append-only file, stopped with
SIGTERM (it writes the file and exits) and restarted on the same port and folder."""

from __future__ import annotations

import httpx
import pytest

from idbody.stack.polling import until
from idbody.stack.servers import ValkeyServer
from idbody.stack.service import running_stack, stack_settings
from shared.access.api_keys import ApiKeyStore
from shared.access.rate_limit import ACTIVE_KEY, RateLimiter
from shared.jobs.record import JobStatus
from shared.jobs.store import JobStore
from tests.chaos.chaos_stack import Stopwatch, records, submit, unfinished
from tests.face_photos import tom_jpeg

pytestmark = pytest.mark.integration

OUTAGE_S = 8


@pytest.fixture(scope="module")
def own_valkey(tmp_path_factory):
    """A one-element list: the test replaces the server when it restarts it, and the last one is
    stopped after the stack (whose workers need Valkey to shut down cleanly)."""
    box = [ValkeyServer.start(tmp_path_factory.mktemp("outage-valkey"), appendonly=True)]
    yield box
    box[0].stop()


@pytest.fixture(scope="module")
def stack(own_valkey, s3_server, tiny_model_dir, tmp_path_factory):
    settings = stack_settings(own_valkey[0], s3_server, 0, "vkout", tiny_model_dir=tiny_model_dir,
                              model_profile="tiny", device="cpu", auth_disabled=False,
                              # leases outlive the outage, so no job is requeued because of it
                              worker_heartbeat_ttl_s=OUTAGE_S * 3)
    with running_stack(settings, tmp_path_factory.mktemp("vkout-logs"), 600, io_worker="io", beat=True) as stack:
        yield stack


def _check_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.json()["error"]["code"] == "service_unavailable" and int(r.headers["Retry-After"]) > 0


def test_valkey_outage_answers_503_and_loses_nothing(stack, own_valkey, request):
    valkey = own_valkey[0]
    burst = request.config.getoption("--chaos-burst")
    store = JobStore.from_settings(stack.settings)
    created = ApiKeyStore(store.client).create("chaos", rate_limit_per_min=10_000, max_queued_jobs=10_000)
    auth = {"Authorization": f"Bearer {created.token}"}
    accepted: list[str] = []
    whole = Stopwatch()
    for _ in range(burst // 2):
        r = submit(stack.base_url, tom_jpeg(), headers=auth)
        assert r.status_code == 202, r.text
        accepted.append(r.json()["request_id"])

    valkey.stop()
    outage = Stopwatch()
    answers = 0
    while outage() < OUTAGE_S:  # the outage lasts OUTAGE_S; submits and polls go on meanwhile
        _check_unavailable(submit(stack.base_url, tom_jpeg(), headers=auth))
        _check_unavailable(httpx.get(f"{stack.base_url}/api/v1/jobs/{accepted[0]}", headers=auth, timeout=60))
        answers += 2
    own_valkey[0] = ValkeyServer.start(valkey.workdir, port=valkey.port, appendonly=True)
    probe: dict[str, httpx.Response] = {}

    def accepted_again() -> bool:
        probe["r"] = submit(stack.base_url, tom_jpeg(), headers=auth)
        return probe["r"].status_code != 503

    until(accepted_again, 120, "submits accepted again")
    for _ in range(burst - burst // 2):
        assert probe["r"].status_code == 202, probe["r"].text
        accepted.append(probe["r"].json()["request_id"])
        probe["r"] = submit(stack.base_url, tom_jpeg(), headers=auth)
    assert probe["r"].status_code == 202, probe["r"].text
    accepted.append(probe["r"].json()["request_id"])
    stored = {key.decode().split(":", 1)[1] for key in store.client.scan_iter("job:*")}
    assert stored == set(accepted)  # no accepted job lost, no record that was not accepted
    until(lambda: not unfinished(store, accepted), 600, "every job finished")
    failed = [r for r in records(store, accepted) if r.status is not JobStatus.SUCCEEDED]
    assert failed == [], [(r.request_id, r.status.value, r.error) for r in failed]
    # no slot leaked (a job's slot is given back just after its record finishes)
    until(lambda: RateLimiter(store.client).active_jobs(created.key.id) == 0, 60,
          f"the key's slots back: {store.client.zrange(ACTIVE_KEY.format(created.key.id), 0, -1)}")
    print(f"\nValkey down {OUTAGE_S} s in a burst of {burst}: {answers} answers during the outage, all 503 "
          f"with Retry-After; {len(accepted)} accepted, 0 lost, 0 failed, 0 slots leaked; test {whole():.0f} s")
