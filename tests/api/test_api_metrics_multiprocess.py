"""`idbody api --workers 2` counts every request once in /metrics, whichever process answers the
scrape: prometheus-client's multiprocess mode, set up by the supervisor before the processes start."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from api.gateway_metrics_dir import ENV, prepare_multiprocess_dir
from idbody.stack.service import ServiceStack

REQUESTS = 40
MAX_REQUESTS = 500


def _writers(folder: Path) -> set[str]:
    """Process ids that wrote counters (files counter_<pid>.db)."""
    return {p.stem.split("_", 1)[1] for p in folder.glob("counter_*.db")}


def _healthz_count(text: str) -> float:
    match = re.search(r'^idbody_http_requests_total\{[^}]*route="/healthz"[^}]*status="200"[^}]*\} (\S+)$',
                      text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_one_process_keeps_its_own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert prepare_multiprocess_dir(1) is None and ENV not in os.environ


def test_the_folder_is_emptied_of_an_earlier_runs_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    monkeypatch.setenv(ENV, str(tmp_path))
    assert prepare_multiprocess_dir(2) == tmp_path
    assert list(tmp_path.glob("*.db")) == []


@pytest.mark.integration
def test_two_gateway_processes_count_every_request_once(settings, redis_client, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    metrics_dir = tmp_path / "prometheus"
    monkeypatch.setenv(ENV, str(metrics_dir))  # the stack's processes inherit it: an operator's emptyDir
    with ServiceStack(settings, tmp_path / "logs") as stack:
        stack.start_gateway(workers=2)
        stack.wait_healthy()
        before = _healthz_count(httpx.get(stack.base_url + "/metrics", timeout=10).text)
        sent = 0
        # a new connection each: the kernel spreads them over both processes; go on (bounded) until
        # both have answered some, so the sum below really adds two processes' counts
        while sent < REQUESTS or (len(_writers(metrics_dir)) < 2 and sent < MAX_REQUESTS):
            assert httpx.get(stack.base_url + "/healthz", timeout=10).status_code == 200
            sent += 1
        assert len(_writers(metrics_dir)) == 2, f"one process answered all {sent} requests"
        # every scrape, whichever process answers it, sees all of them (and no scrape counts twice)
        for _ in range(6):
            scraped = _healthz_count(httpx.get(stack.base_url + "/metrics", timeout=10).text)
            assert scraped - before == sent
