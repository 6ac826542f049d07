import subprocess
import sys

import pytest

from shared.access.api_keys import ApiKeyStore, hash_token
from shared.errors import IdentityBodyError


def test_create_authenticate_revoke(redis_client):
    keys = ApiKeyStore(redis_client)
    created = keys.create("app", rate_limit_per_min=30, max_queued_jobs=5, webhook_url="https://example.com/h")
    token, key = created.token, created.key
    assert token.startswith("idb_") and len(token) >= 40
    assert key.webhook_secret.startswith("whsec_") and key.webhook_url == "https://example.com/h"
    # the plain key is nowhere in Redis; its hash is
    dump = b"".join(k + (redis_client.get(k) if redis_client.type(k) == b"string" else b"".join(
        redis_client.smembers(k))) for k in redis_client.scan_iter("*"))
    assert token.encode() not in dump and hash_token(token).encode() in dump
    assert keys.authenticate(token).id == key.id
    assert keys.authenticate(token + "x") is None
    assert keys.authenticate("Bearer " + token) is None
    assert keys.revoke(key.id) is True
    assert keys.authenticate(token) is None
    assert keys.revoke(key.id) is False
    assert [k.active for k in keys.list()] == [False]


def test_webhook_url_shape_checked_at_creation(redis_client):
    with pytest.raises(IdentityBodyError):
        ApiKeyStore(redis_client).create("x", 1, 1, webhook_url="ftp://example.com/")


def test_cli_create_list_revoke(redis_client, valkey, monkeypatch):
    env = {"IDBODY_REDIS_URL": valkey.url, "PATH": "/usr/bin:/bin"}

    def idbody(*args):
        return subprocess.run([sys.executable, "-m", "idbody.cli", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    out = idbody("keys", "create", "--name", "cli-app", "--rate-limit", "7", "--max-queued", "2")
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
    token, key_id = lines["api key"].strip(), lines["id"].strip()
    assert lines["webhook secret"].strip().startswith("whsec_")
    assert ApiKeyStore(redis_client).authenticate(token).rate_limit_per_min == 7
    listing = idbody("keys", "list")
    assert key_id in listing.stdout and "cli-app" in listing.stdout and token not in listing.stdout
    assert idbody("keys", "revoke", key_id).returncode == 0
    assert "revoked" in idbody("keys", "list").stdout
    assert idbody("keys", "revoke", "key_nope").returncode == 1
