"""The full-size bench's memory-plan phase runs on the CPU (``--smoke``): every emulated card's plan
is applied to the tiny engine with diffusers' hooks and generates; the JSON says nothing was emulated."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench import memory_plans
from bench.fast_engine import Setup


def test_the_smoke_phase_applies_each_cards_plan_and_writes_it(tmp_path: Path):
    out = tmp_path / "full.json"
    out.write_text(json.dumps({"cases": {"kept": True}}))     # what the earlier phases wrote
    setup = Setup(smoke=True, device="cpu", width=64, height=64, repeats=1, cache_dir=tmp_path,
                  deadline=time.monotonic() + 3600)
    memory_plans.run(setup, out)
    data = json.loads(out.read_text())
    assert data["cases"] == {"kept": True}
    section = data["memory_plans"]
    assert "no card emulated" in section["note"] and section["job"]["size"] == [832, 1216]
    cards = section["cards"]
    assert list(cards) == ["4 GiB", "8 GiB", "12 GiB", "24 GiB"]
    names = [cards[c]["plan"]["name"] for c in cards]
    assert names[0] == "group-offload" and names[-1] == "resident" and len(set(names)) >= 3
    for card in cards.values():
        assert card["images"] == 2 and card["s_per_image"] > 0 and card["emulated"] is False
        assert card["plan"]["device"] == "cpu"
