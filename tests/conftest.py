"""Real servers on loopback for every test that crosses a process: Valkey and SeaweedFS S3."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from idbody.stack.servers import SeaweedS3Server, ValkeyServer
from shared.settings import Settings

# Fixtures that start real servers: a test that uses one (directly or through another fixture) is
# an integration test, whatever its module says, so `-m "not integration"` never starts a server.
SERVER_FIXTURES = frozenset({"valkey", "s3_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory):
    with ValkeyServer.start(tmp_path_factory.mktemp("valkey")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    with SeaweedS3Server.start(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def redis_client(valkey):
    import redis

    client = redis.Redis.from_url(valkey.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(valkey, s3_server, tmp_path: Path) -> Settings:
    """Settings pointing at the loopback servers, with fresh bucket names per test."""
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        _env_file=None,
        redis_url=valkey.url,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_bucket_uploads=f"uploads-{suffix}",
        s3_bucket_results=f"results-{suffix}",
        tiny_model_dir=tmp_path.parent / "tiny-models",
        model_profile="tiny",
        auth_disabled=True,
    )


# --- engine (tiny profile, built once per session) ---------------------------------------------
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny profile in the folder the ``settings`` fixture points at (built once, reused)."""
    from worker.tiny.model_dir import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.getbasetemp() / "tiny-models")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path):
    """The tiny profile loaded through the real loading path, on the CPU."""
    from worker.engine.devices import DevicePolicy
    from worker.engine.loading import load_engine

    return load_engine(tiny_model_dir, DevicePolicy.decide(Settings(_env_file=None, device="cpu")))
