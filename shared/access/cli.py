"""``idbody keys create|list|revoke``: manage API keys in the configured Redis/Valkey.

Example::

    idbody keys create --name my-app --rate-limit 120 --max-queued 20 --webhook-url https://example.com/hook
    idbody keys list
    idbody keys revoke key_3f2a9c01d4e5
"""

from __future__ import annotations

import argparse
import datetime


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="Create, list and revoke API keys.")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="Create a key; prints it once, with its webhook secret.")
    create.add_argument("--name", required=True, help="What the key is for (shown in 'keys list').")
    create.add_argument("--rate-limit", type=int, default=None, help="Requests per minute (default from settings).")
    create.add_argument("--max-queued", type=int, default=None, help="Unfinished jobs at once (default from settings).")
    create.add_argument("--webhook-url", default=None, help="Default webhook URL for this key's jobs.")
    create.set_defaults(func=_create)

    listing = actions.add_parser("list", help="List keys (never the keys themselves).")
    listing.set_defaults(func=_list)

    revoke = actions.add_parser("revoke", help="Stop accepting a key now.")
    revoke.add_argument("key_id", help="The key's id, as 'keys list' shows it (key_...).")
    revoke.set_defaults(func=_revoke)


def _store():
    import redis

    from shared.access.api_keys import ApiKeyStore
    from shared.settings import get_settings

    return ApiKeyStore(redis.Redis.from_url(get_settings().redis_url)), get_settings()


def _create(args: argparse.Namespace) -> int:
    from shared.errors import IdentityBodyError

    store, settings = _store()
    try:
        created = store.create(
            args.name,
            rate_limit_per_min=args.rate_limit or settings.default_rate_limit_per_min,
            max_queued_jobs=args.max_queued or settings.default_max_queued_jobs,
            webhook_url=args.webhook_url,
        )
    except IdentityBodyError as exc:
        print(f"error: {exc.message}")
        return 2
    key = created.key
    print(f"id:             {key.id}")
    print(f"name:           {key.name}")
    print(f"api key:        {created.token}")
    print(f"webhook secret: {key.webhook_secret}")
    print(f"rate limit:     {key.rate_limit_per_min}/min, max unfinished jobs {key.max_queued_jobs}")
    if key.webhook_url:
        print(f"webhook url:    {key.webhook_url}")
    print("Store the api key now: only its hash is kept and it cannot be shown again.")
    return 0


def _list(args: argparse.Namespace) -> int:
    store, _ = _store()
    keys = store.list()
    if not keys:
        print("no keys; create one with: idbody keys create --name NAME")
        return 0
    print(f"{'id':<17} {'name':<20} {'rate/min':>8} {'queued':>6}  {'created (UTC)':<19}  status")
    for key in keys:
        created = datetime.datetime.fromtimestamp(key.created_at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        status = "active" if key.active else "revoked"
        print(f"{key.id:<17} {key.name[:20]:<20} {key.rate_limit_per_min:>8} {key.max_queued_jobs:>6}  {created}  {status}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    store, _ = _store()
    if store.revoke(args.key_id):
        print(f"revoked {args.key_id}")
        return 0
    print(f"error: no active key {args.key_id}; see 'idbody keys list'")
    return 1
