"""`.env.example` is generated from Settings: it must match, and read back to the defaults."""

from __future__ import annotations

from pathlib import Path

from shared.env_example import render
from shared.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_committed_env_example_is_generated():
    committed = (ROOT / ".env.example").read_text()
    assert committed == render(), "run: python -m shared.env_example > .env.example"


def test_every_setting_documented():
    text = render()
    for name, field in Settings.model_fields.items():
        assert f"{ENV_PREFIX}{name.upper()}=" in text
        assert field.description and f"# {field.description}" in text


def test_env_example_reads_back_as_the_defaults(tmp_path, monkeypatch):
    for var in [v for v in __import__("os").environ if v.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(var)
    env_file = tmp_path / ".env"
    env_file.write_text(render())
    from_file = Settings(_env_file=env_file)
    defaults = Settings(_env_file=None)
    assert from_file.model_dump() == defaults.model_dump()
    assert from_file.s3_secret_key.get_secret_value() == defaults.s3_secret_key.get_secret_value()
