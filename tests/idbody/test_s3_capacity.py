"""The loopback SeaweedFS takes writes to as many buckets as a test session makes. Each bucket is a
collection that takes volumes on its first write; with the automatic volume cap (free disk / 1 GiB,
71 on the development VM) the 72nd bucket's first write failed with InternalError, late in the
suite, in whichever test came next (seen 2026-11-26)."""

from __future__ import annotations

import uuid

import pytest

from idbody.stack.servers import VOLUME_SLOTS

pytestmark = pytest.mark.integration

BUCKETS = 100  # more than the automatic cap gave on a machine with 71 GiB free


def test_writes_to_more_buckets_than_the_automatic_volume_cap(s3_server):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id=s3_server.access_key,
                          aws_secret_access_key=s3_server.secret_key, region_name="us-east-1")
    assert VOLUME_SLOTS >= 1000
    made = []
    try:
        for i in range(BUCKETS):
            bucket = f"capacity-{i}-{uuid.uuid4().hex[:6]}"
            client.create_bucket(Bucket=bucket)
            made.append(bucket)
            client.put_object(Bucket=bucket, Key="k", Body=b"x" * 1024)
        assert len(made) == BUCKETS
    finally:
        for bucket in made:
            client.delete_object(Bucket=bucket, Key="k")
            client.delete_bucket(Bucket=bucket)
