"""Which failures count as transient, and the worker's retry of them (no servers needed: the
dependency here is a function that fails a given number of times)."""

from __future__ import annotations

import botocore.exceptions
import pytest
import redis

from shared.transient import is_transient
from worker.jobs.transient_retry import TransientRetry


class NotesStore:
    """Collects the notes TransientRetry writes, as JobStore.update would store them."""

    def __init__(self) -> None:
        self.notes: list[str | None] = []

    def update(self, request_id: str, note: str | None) -> object:
        self.notes.append(note)
        return object()


def _failing(times: int, error: Exception):
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return "ok"

    return call, calls


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize("error, transient", [
    (redis.ConnectionError("refused"), True),
    (redis.TimeoutError("slow"), True),
    (redis.ResponseError("LOADING Valkey is loading the dataset"), True),
    (botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3"), True),
    (_client_error("SlowDown", 503), True),
    (_client_error("NoSuchKey", 404), False),
    (redis.ResponseError("WRONGTYPE"), False),
    (ValueError("bad image"), False),
])
def test_is_transient(error, transient):
    assert is_transient(error) is transient


def test_transient_cause_makes_the_wrapper_transient():
    try:
        try:
            raise redis.ConnectionError("refused")
        except redis.ConnectionError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_retries_with_backoff_and_notes_then_clears_the_note():
    store, waits = NotesStore(), []
    call, calls = _failing(3, botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3"))
    retry = TransientRetry(store, "r1", window_s=60, sleep=waits.append)
    assert retry.call("the image store", call) == "ok"
    assert calls["n"] == 4 and waits == [0.5, 1.0, 2.0] and retry.retries == 3
    assert store.notes == ["retrying: the image store is unreachable"] * 3 + [None]


def test_permanent_errors_are_not_retried():
    call, calls = _failing(1, ValueError("no face"))
    with pytest.raises(ValueError):
        TransientRetry(NotesStore(), "r1", window_s=60, sleep=lambda s: None).call("x", call)
    assert calls["n"] == 1


def test_gives_up_after_the_window():
    call, calls = _failing(1000, redis.ConnectionError("down"))
    with pytest.raises(redis.ConnectionError):
        TransientRetry(NotesStore(), "r1", window_s=0, sleep=lambda s: None).call("x", call)
    assert calls["n"] == 1
