"""``idbody up``'s environment for its children and ``idbody worker ready``, on a real Valkey."""

from __future__ import annotations

import socket

from idbody.stack.up import child_env, settings_env
from shared.jobs.store import JobStore
from shared.settings import Settings
from worker.run_cli import _ready


def test_children_read_back_the_same_settings(settings, monkeypatch):
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None) == settings.model_copy(
        update={"tiny_model_dir": settings.tiny_model_dir.resolve(), "model_dir": settings.model_dir.resolve()}
    )


def test_local_stack_children_run_without_auth_on_the_chosen_profile(settings):
    env = child_env(settings.model_copy(update={"auth_disabled": False}), "tiny", 8123)
    assert env["IDBODY_AUTH_DISABLED"] == "true"
    assert env["IDBODY_MODEL_PROFILE"] == "tiny" and env["IDBODY_API_PORT"] == "8123"
    assert env["IDBODY_S3_SECRET_KEY"] == settings.s3_secret_key.get_secret_value()


def test_worker_ready_follows_this_hosts_heartbeat(settings, redis_client, capsys):
    assert _ready(settings) == 1
    store = JobStore.from_settings(settings)
    store.heartbeat_worker("other:1", {"hostname": "another-host", "pipeline_loaded": True}, 30)
    assert _ready(settings) == 1
    store.heartbeat_worker("me:1", {"hostname": socket.gethostname(), "profile": "tiny", "pipeline_loaded": True}, 30)
    assert _ready(settings) == 0
    assert "profile tiny" in capsys.readouterr().out
