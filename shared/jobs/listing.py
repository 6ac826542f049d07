"""The caller's jobs, newest first, a page at a time (``GET /api/v1/jobs``).

``JobStore.create`` adds every job to its owner's index (``jobs:owner:{owner}``, scored by
created_at). A page reads the index from a cursor and the records in one MGET; ids whose record
has expired or was deleted are skipped and dropped from the index. The cursor is opaque to
clients (unpadded URL-safe base64 of ``<created_at>:<request_id>``, a format that may change): the
(created_at, request_id) of the last job returned, so pages neither repeat nor skip
jobs when new ones arrive in between.

Example::

    page = list_jobs(store, owner="key_1", limit=20)
    page.records, page.next_cursor          # pass next_cursor back for the following page
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from dataclasses import dataclass

from shared.errors import ErrorCode, IdentityBodyError
from shared.jobs.record import JobRecord
from shared.jobs.store import JOB_KEY, OWNER_JOBS_KEY, JobStore

MAX_PAGE = 100


@dataclass(frozen=True)
class JobPage:
    records: list[JobRecord]
    next_cursor: str | None  # None on the last page


def encode_cursor(created_at: float, request_id: str) -> str:
    """Opaque cursor after the job (created_at, request_id).

    Example::

        decode_cursor(encode_cursor(1.5, "r1"))   # (1.5, "r1")
    """
    return base64.urlsafe_b64encode(f"{created_at!r}:{request_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(created_at, request_id) from a cursor; IdentityBodyError(invalid_parameter) when malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, _, request_id = raw.partition(":")
        if not request_id:
            raise ValueError("no request id")
        created_at = float(score)
        if not math.isfinite(created_at):  # "nan"/"inf" parse as floats but are no created_at
            raise ValueError("not a time")
        return created_at, request_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise IdentityBodyError(ErrorCode.INVALID_PARAMETER,
                                "cursor: not a cursor this API returned; pass next_cursor unchanged.",
                                field="cursor") from None


def list_jobs(store: JobStore, owner: str | None, limit: int = 20, cursor: str | None = None) -> JobPage:
    """Up to ``limit`` of ``owner``'s jobs (None: jobs submitted without a key), newest first,
    starting after ``cursor``."""
    limit = max(1, min(int(limit), MAX_PAGE))
    key = OWNER_JOBS_KEY.format(owner or "-")
    client = store.client
    client.zremrangebyscore(key, "-inf", time.time() - store.retention_s)
    position = decode_cursor(cursor) if cursor else None
    found: list[tuple[JobRecord, float]] = []
    while len(found) <= limit:
        entries = _entries_after(client, key, position, limit + 1 - len(found))
        if not entries:
            break
        raws = client.mget([JOB_KEY.format(rid) for rid, _ in entries])
        gone = [rid for (rid, _), raw in zip(entries, raws) if raw is None]
        if gone:
            client.zrem(key, *gone)
        found += [(JobRecord.model_validate_json(raw), score) for (_, score), raw in zip(entries, raws) if raw]
        position = (entries[-1][1], entries[-1][0])
    page = found[:limit]
    more = len(found) > limit
    next_cursor = encode_cursor(page[-1][1], page[-1][0].request_id) if more else None
    return JobPage([record for record, _ in page], next_cursor)


def _entries_after(client, key: str, position: tuple[float, str] | None, count: int) -> list[tuple[str, float]]:
    """(request_id, created_at) of the next ``count`` index entries after ``position``, in the
    index's newest-first order (equal scores: request ids descending, as ZREVRANGE orders them)."""
    if position is None:
        rows = client.zrevrangebyscore(key, "+inf", "-inf", start=0, num=count, withscores=True)
        return [(rid.decode(), score) for rid, score in rows]
    score, after_id = position
    ties = int(client.zcount(key, score, score))
    rows = client.zrevrangebyscore(key, score, "-inf", start=0, num=count + ties, withscores=True)
    entries = [(rid.decode(), s) for rid, s in rows if not (s == score and rid.decode() >= after_id)]
    return entries[:count]
