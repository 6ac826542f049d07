"""``idbody plan``: the plan a worker would pick on a card, printed without loading weights or torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from idbody.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def plain_settings(monkeypatch, tmp_path):
    from shared.settings import get_settings

    for name in ("IDBODY_MEMORY_PLAN", "IDBODY_MAX_BATCH_IMAGES", "IDBODY_DEFAULT_WIDTH", "IDBODY_DEFAULT_HEIGHT",
                 "IDBODY_ENGINE_COMPILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)   # no .env here
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def plan_json(capsys, *args: str) -> dict:
    assert main(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_4_and_80_gb_cards_get_different_plans_and_the_4_gb_one_fits(capsys):
    small, big = plan_json(capsys, "--vram-gb", "4"), plan_json(capsys, "--vram-gb", "80")
    assert small["name"] == "group-offload" and big["name"] == "resident"
    assert small["predicted_peak_gib"] <= small["budget_gib"] < 4
    assert small["vae_tiling"] is True and small["fp8"] and small["compile"] is False
    assert big["rows_per_pass"] == 8 and big["compile"] is True and big["size"] == [832, 1216]


def test_the_text_says_what_an_operator_needs(capsys):
    assert main(["plan", "--vram-gb", "4", "--width", "768", "--height", "1024"]) == 0
    out = capsys.readouterr().out
    assert "plan: group-offload" in out and "at 768x1024" in out and "predicted peak" in out
    assert "fp8 storage: controlnet" in out and "VAE tiling: on" in out and "compile: skipped" in out


def test_the_setting_and_the_flag_force_a_plan(capsys, monkeypatch):
    assert plan_json(capsys, "--vram-gb", "80", "--plan", "model-offload")["name"] == "model-offload"
    from shared.settings import get_settings

    monkeypatch.setenv("IDBODY_MEMORY_PLAN", "resident-fp8")
    monkeypatch.setenv("IDBODY_MAX_BATCH_IMAGES", "2")
    get_settings.cache_clear()
    forced = plan_json(capsys, "--vram-gb", "80")
    assert forced["name"] == "resident-fp8" and forced["rows_per_pass"] == 2


def test_the_pose_controlnet_counts_when_asked(capsys):
    without = plan_json(capsys, "--vram-gb", "24", "--plan", "resident")
    with_pose = plan_json(capsys, "--vram-gb", "24", "--plan", "resident", "--with", "pose")
    assert with_pose["predicted_peak_gib"] > without["predicted_peak_gib"] + 2


def test_plan_does_not_import_torch():
    code = ("import sys; from idbody.cli import main; main(['plan', '--vram-gb', '4']); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert "plan: group-offload" in run.stdout
