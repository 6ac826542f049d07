"""Wait for something observable, with a deadline and no fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def until(predicate: Callable[[], Any], deadline_s: float, what: str) -> Any:
    """Call ``predicate`` until it returns something truthy (returned) or ``deadline_s`` passes (AssertionError)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
