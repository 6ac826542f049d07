"""A container deployment names the public URL its links point at, or does not start: the gateway
(`idbody api`, and the app factory uvicorn loads) and the io worker, which renders webhook bodies,
refuse with a message naming IDBODY_PUBLIC_API_URL. The images say they are containers
(IDBODY_DEPLOYMENT=container); compose and the k8s settings set the URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.deployment import DeploymentSettingsError, check_deployment, public_api_base
from shared.settings import Settings
from tests.compose_files import load_compose
from worker.webhooks.links import MAX_PRESIGN_S, webhook_links_ttl_s

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IDBODY_")}
    # nothing listens here: a command that got past the check would fail differently, or hang
    clean.update(PYTHONPATH=str(ROOT), IDBODY_REDIS_URL="redis://127.0.0.1:9/0", **env)
    return subprocess.run([sys.executable, *argv], env=clean, capture_output=True, text=True, timeout=60,
                          cwd=ROOT / "deploy")  # no .env there


def test_container_without_public_url_is_refused_with_the_setting_named() -> None:
    with pytest.raises(DeploymentSettingsError, match="IDBODY_PUBLIC_API_URL"):
        check_deployment(Settings(_env_file=None, deployment="container"))
    check_deployment(Settings(_env_file=None, deployment="container", public_api_url="https://idbody.example.com"))
    check_deployment(Settings(_env_file=None))  # local runs fall back to loopback


def test_public_base_is_the_setting_or_the_loopback_gateway() -> None:
    assert public_api_base(Settings(_env_file=None, public_api_url="https://x.example/")) == "https://x.example"
    assert public_api_base(Settings(_env_file=None, api_host="0.0.0.0", api_port=8123)) == "http://127.0.0.1:8123"


@pytest.mark.parametrize("argv", [["-m", "idbody.cli", "api"], ["-m", "idbody.cli", "worker", "--queues", "io"]])
def test_gateway_and_io_worker_refuse_to_start_in_a_container_without_it(argv: list[str]) -> None:
    refused = _run(argv, IDBODY_DEPLOYMENT="container")
    assert refused.returncode == 2, refused.stderr
    assert "IDBODY_PUBLIC_API_URL" in refused.stderr and "not starting" in refused.stderr


def test_the_app_factory_refuses_too() -> None:
    """uvicorn --factory api.main:create_app (what each `--workers N` process runs) stops at once."""
    refused = _run(["-c", "from api.main import create_app; create_app()"], IDBODY_DEPLOYMENT="container")
    assert refused.returncode != 0 and "IDBODY_PUBLIC_API_URL" in refused.stderr


def test_images_say_container_and_deployments_set_the_public_url() -> None:
    for dockerfile in ("api.Dockerfile", "worker.Dockerfile"):
        text = (ROOT / "deploy" / dockerfile).read_text()
        assert text.count("IDBODY_DEPLOYMENT=container") == (1 if dockerfile == "api.Dockerfile" else 2), dockerfile
    compose = load_compose(ROOT / "docker-compose.yml")
    for name in ("api", "worker-io"):
        assert compose["services"][name]["environment"]["IDBODY_PUBLIC_API_URL"], name
    settings = yaml.safe_load((ROOT / "deploy" / "k8s" / "settings.yaml").read_text())
    assert settings["data"]["IDBODY_PUBLIC_API_URL"].startswith("https://")


def test_webhook_image_links_outlive_the_retry_schedule() -> None:
    settings = Settings(_env_file=None, s3_presign_expiry_s=3600, webhook_max_attempts=8,
                        webhook_backoff_cap_s=900, webhook_timeout_s=10)
    assert webhook_links_ttl_s(settings, attempts_made=0) == 3600 + 8 * 910
    assert webhook_links_ttl_s(settings, attempts_made=7) == 3600 + 910
    assert webhook_links_ttl_s(settings, attempts_made=8) == 3600
    assert webhook_links_ttl_s(settings.model_copy(update={"s3_presign_expiry_s": MAX_PRESIGN_S}), 0) == MAX_PRESIGN_S
