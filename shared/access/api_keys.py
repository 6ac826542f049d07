"""API keys: created by ``idbody keys create``, stored hashed in Redis/Valkey.

A key is ``idb_`` + 43 URL-safe characters (32 random bytes). Only its SHA-256 is stored. A fast,
unsalted hash is the right tool here, unlike for passwords: the token carries 256 bits of entropy,
so there is nothing to guess or to pre-compute, and a plain digest lets every request find its key
with one O(1) lookup instead of a deliberately slow comparison against every stored key.

Each key also owns a webhook secret (``whsec_...``). That one is stored as is, because the io
worker needs it to sign deliveries.

Keys::

    apikey:{key_id}          JSON of ApiKey
    apikey-hash:{sha256}     key_id (deleted on revoke)
    apikeys                  set of key ids

Example::

    keys = ApiKeyStore(redis_client)
    created = keys.create("my-app", rate_limit_per_min=60, max_queued_jobs=10)
    created.token                                 # shown once: idb_...
    keys.authenticate(created.token).id           # 'key_3f2a9c01d4e5'
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass

import redis
from pydantic import BaseModel, Field

from shared.url_guard import parse_webhook_url

TOKEN_PREFIX = "idb_"
KEY_RECORD = "apikey:{}"
HASH_INDEX = "apikey-hash:{}"
ALL_KEYS = "apikeys"
WEBHOOK_SECRET_PREFIX = "whsec_"  # Standard Webhooks' secret form
WEBHOOK_SECRET_BYTES = 32  # the spec asks for 24-64 random bytes


def new_webhook_secret() -> str:
    """A fresh random webhook signing secret in the spec's ``whsec_<base64>`` form.

    Example::

        new_webhook_secret()   # 'whsec_3q2+7w...'
    """
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(WEBHOOK_SECRET_BYTES)).decode("ascii")


class ApiKey(BaseModel):
    id: str
    name: str
    key_hash: str
    rate_limit_per_min: int = Field(ge=1)
    max_queued_jobs: int = Field(ge=1)
    webhook_secret: str
    webhook_url: str | None = None
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    token: str  # the only time the plain key exists outside the client


def hash_token(token: str) -> str:
    """Hex SHA-256 of a presented key.

    Example::

        hash_token("idb_abc")   # '8f0c...'
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class ApiKeyStore:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def create(self, name: str, rate_limit_per_min: int, max_queued_jobs: int,
               webhook_url: str | None = None) -> CreatedKey:
        """A new key; the returned token is never stored and cannot be shown again."""
        if webhook_url:
            parse_webhook_url(webhook_url)  # shape only; addresses are checked when a job uses it
        token = new_token()
        key = ApiKey(
            id="key_" + secrets.token_hex(6), name=name, key_hash=hash_token(token),
            rate_limit_per_min=rate_limit_per_min, max_queued_jobs=max_queued_jobs,
            webhook_secret=new_webhook_secret(), webhook_url=webhook_url or None, created_at=time.time(),
        )
        pipe = self.client.pipeline(transaction=True)
        pipe.set(KEY_RECORD.format(key.id), key.model_dump_json())
        pipe.set(HASH_INDEX.format(key.key_hash), key.id)
        pipe.sadd(ALL_KEYS, key.id)
        pipe.execute()
        return CreatedKey(key=key, token=token)

    def get(self, key_id: str) -> ApiKey | None:
        raw = self.client.get(KEY_RECORD.format(key_id))
        return None if raw is None else ApiKey.model_validate_json(raw)

    def authenticate(self, token: str) -> ApiKey | None:
        """The active key for a presented token, or None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        key_id = self.client.get(HASH_INDEX.format(hash_token(token)))
        if key_id is None:
            return None
        key = self.get(key_id.decode())
        return key if key is not None and key.active else None

    def list(self) -> list[ApiKey]:
        ids = sorted(i.decode() for i in self.client.smembers(ALL_KEYS))
        keys = [self.get(i) for i in ids]
        return sorted((k for k in keys if k is not None), key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> bool:
        """Stop accepting a key now; False when unknown or already revoked."""
        key = self.get(key_id)
        if key is None or not key.active:
            return False
        key.revoked_at = time.time()
        pipe = self.client.pipeline(transaction=True)
        pipe.set(KEY_RECORD.format(key.id), key.model_dump_json())
        pipe.delete(HASH_INDEX.format(key.key_hash))
        pipe.execute()
        return True
