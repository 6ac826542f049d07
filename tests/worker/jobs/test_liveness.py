"""The worker's liveness file: one per stack and node, so two local stacks on one host (or two
workers of one stack) never answer each other's liveness probe."""

from __future__ import annotations

import os
from pathlib import Path

from shared.celery_app import beat_schedule_path, stack_tag
from shared.settings import Settings
from worker.jobs.liveness import LivenessBeacon, alive_path, check_alive


def test_two_stacks_on_one_host_have_their_own_liveness_file(tmp_path: Path) -> None:
    one, other = stack_tag("redis://127.0.0.1:6379/0"), stack_tag("redis://127.0.0.1:6390/0")
    assert one != other
    assert alive_path("gpu0@host", one, tmp_path) != alive_path("gpu0@host", other, tmp_path)
    assert alive_path("gpu0@host", one, tmp_path) != alive_path("gpu1@host", one, tmp_path)
    assert alive_path("gpu0@host", one, tmp_path) == alive_path("gpu0@host", one, tmp_path)

    beacon = LivenessBeacon(alive_path("gpu0@host", one, tmp_path)).start()
    try:
        assert check_alive(alive_path("gpu0@host", one, tmp_path))[0]
        alive, sentence = check_alive(alive_path("gpu0@host", other, tmp_path))
        assert not alive and "no liveness beacon" in sentence  # the other stack's worker is not this one
    finally:
        beacon.stop()


def test_a_stale_beacon_is_not_alive(tmp_path: Path) -> None:
    path = alive_path("io@host", stack_tag("redis://r:6379/0"), tmp_path)
    path.write_text("1 0\n")
    os.utime(path, (1000.0, 1000.0))
    alive, sentence = check_alive(path, max_age_s=30, now=1031.0)
    assert not alive and "stuck" in sentence


def test_beat_schedule_and_liveness_name_the_stack_alike() -> None:
    settings = Settings(_env_file=None, redis_url="redis://127.0.0.1:6391/0")
    assert beat_schedule_path(settings).name.endswith(stack_tag(settings.redis_url))
