"""The base checkpoints a job may name, as the live workers publish them in their heartbeats
(``base_models``: name, default flag, digest), and the submit-time check of ``base_model``.

The gateway has no model folder of its own: what the workers loaded is the truth. A name no live
worker offers is refused at submit (422 ``unknown_base_model`` with the names there are); with no
live worker to ask, the job is accepted and a worker refuses the name the same way if it has no
such base, failing the job with that code.

Example::

    offered_bases(store.live_workers())   # [{"name": "tiny", "default": True, "digest": "9a1c..."}, ...]
    check_base_model(store, params)       # raises IdentityBodyError(unknown_base_model)
"""

from __future__ import annotations

from typing import Any

import redis

from shared.base_models import unknown_base_error
from shared.jobs.store import JobStore
from shared.params import GenerationParams


def offered_bases(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every base some live worker offers, once, in the order the workers list them."""
    seen: dict[str, dict[str, Any]] = {}
    for worker in workers:
        for base in worker.get("base_models") or []:
            seen.setdefault(str(base["name"]), dict(base))
    return list(seen.values())


def check_base_model(store: JobStore, params: GenerationParams) -> None:
    """Refuse a ``base_model`` that no live worker offers (nothing to check when none is named, or
    when no worker can be asked)."""
    if params.base_model is None:
        return
    try:
        names = [b["name"] for b in offered_bases(store.live_workers())]
    except redis.RedisError:
        return   # the record write that follows reports the outage
    if names and params.base_model not in names:
        raise unknown_base_error(params.base_model, names)
