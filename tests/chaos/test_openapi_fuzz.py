"""Schemathesis against the gateway's own OpenAPI document, on the real gateway process with real
Valkey and SeaweedFS: every generated request (valid and invalid, every operation) must get an
answer below 500 in the documented error shape. CI runs ``--fuzz-examples`` (60) per operation,
derandomized; raise it for a longer hunt: ``python -m pytest tests/chaos/test_openapi_fuzz.py --fuzz-examples 2000``."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import given

from idbody.stack.service import ServiceStack, stack_settings
from shared.errors import ErrorCode
from shared.jobs.store import JobStore
from shared.storage import Storage

pytestmark = pytest.mark.integration

CODES = {code.value for code in ErrorCode}


@pytest.fixture(scope="module")
def fuzzed_gateway(valkey, s3_server, tmp_path_factory):
    # auth off, so generated requests reach the routes' logic rather than stopping at 401
    settings = stack_settings(valkey, s3_server, 12, "fuzz", auth_disabled=True)
    JobStore.from_settings(settings).client.flushdb()
    Storage.from_settings(settings).ensure_buckets()
    with ServiceStack(settings, tmp_path_factory.mktemp("fuzz-logs")) as stack:
        stack.start_gateway()
        stack.wait_healthy()
        yield stack


def _check(case, statuses: Counter) -> None:
    response = case.call()
    statuses[response.status_code] += 1
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] in CODES and error["message"], response.text[:300]


def test_no_server_errors_and_stable_error_codes(fuzzed_gateway):
    schema = schemathesis.openapi.from_url(fuzzed_gateway.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # /readyz answers 503 by design here (no GPU worker runs in this test)
    operations = [op for op in operations if op.path != "/readyz"]
    assert len(operations) >= 6
    statuses: Counter = Counter()
    for operation in operations:
        # the examples per operation come from the idbody-fuzz profile (tests/conftest.py)
        given(case=operation.as_strategy())(lambda case: _check(case, statuses))()
    print(f"\n{sum(statuses.values())} requests over {len(operations)} operations: {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= len(operations)
