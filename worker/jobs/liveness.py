"""Liveness of a worker process, kept apart from readiness on purpose.

- liveness (``idbody worker alive``): this worker's process runs and its interpreter is not wedged:
  a beacon thread of the worker touches a file every few seconds. It needs no broker, so a Redis
  or Valkey outage never fails it and a cluster never restarts a GPU worker (and reloads SDXL)
  because the broker blinked.
- readiness (``idbody worker ready``): the pipeline is loaded and the broker answers (the worker's
  heartbeat in Redis, published after the load, is fresh). An outage makes the worker unready
  until the broker is back and the next heartbeat lands.

The file lives in the temp folder, one per stack (``stack_tag``: its Redis URL) and Celery node
name, so several workers of one stack (``idbody up --workers N``) and two stacks on one host each
have their own.

Example::

    beacon = LivenessBeacon(alive_path("gpu@host", stack_tag(settings.redis_url))).start()
    check_alive(alive_path("gpu@host", stack_tag(settings.redis_url)))   # (True, "alive: beacon 2.1 s old")
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from pathlib import Path

BEACON_INTERVAL_S = 5.0
# six missed beats: a process that ran a long GIL-holding call still counts as alive
MAX_BEACON_AGE_S = 30.0


def alive_path(node: str, stack: str, folder: str | os.PathLike | None = None) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", node)
    return Path(folder or tempfile.gettempdir()) / f"idbody-worker-{stack}-{safe}.alive"


class LivenessBeacon:
    """Touches ``path`` every ``interval_s`` from a daemon thread while the process lives."""

    def __init__(self, path: Path, interval_s: float = BEACON_INTERVAL_S) -> None:
        self.path = path
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idbody-liveness", daemon=True)

    def start(self) -> LivenessBeacon:
        self.touch()  # alive as soon as start() returns
        self._thread.start()
        return self

    def touch(self) -> None:
        self.path.write_text(f"{os.getpid()} {time.time():.3f}\n")

    def stop(self) -> None:
        self._stop.set()
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.touch()
            except OSError:  # a full or read-only temp folder: the probe will say so
                pass


def check_alive(path: Path, max_age_s: float = MAX_BEACON_AGE_S, now: float | None = None) -> tuple[bool, str]:
    """(alive, a sentence for the probe's output)."""
    try:
        age = (now if now is not None else time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False, f"not alive: no liveness beacon at {path} (worker not started, or exited)"
    if age > max_age_s:
        return False, f"not alive: liveness beacon {age:.0f} s old (limit {max_age_s:.0f} s): the worker process is stuck"
    return True, f"alive: beacon {age:.1f} s old"
