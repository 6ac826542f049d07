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


def pytest_addoption(parser: pytest.Parser) -> None:
    # the chaos suite's sizes (tests/chaos): CI runs the defaults, a soak run raises them
    group = parser.getgroup("chaos", "fault-injection and fuzz sizes (tests/chaos)")
    group.addoption("--chaos-kills", type=int, default=10, help="GPU-worker SIGKILLs mid-job (default 10).")
    group.addoption("--chaos-burst", type=int, default=12, help="Jobs submitted around each outage (default 12).")
    group.addoption("--fuzz-examples", type=int, default=60,
                    help="Schemathesis examples per API operation (default 60, ~300 in all).")


def pytest_configure(config: pytest.Config) -> None:
    from hypothesis import HealthCheck, settings

    # the OpenAPI fuzz test (tests/chaos/test_openapi_fuzz.py): derandomized, so CI runs the same
    # examples every time; --fuzz-examples raises the count
    settings.register_profile("idbody-fuzz", max_examples=config.getoption("--fuzz-examples"), derandomize=True,
                              deadline=None, database=None, suppress_health_check=list(HealthCheck))
    settings.load_profile("idbody-fuzz")


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
    """The tiny profile in the folder the ``settings`` fixture points at (built once, reused).

    Every in-process engine test depends on it, so it also keeps torch to one thread in the test
    process: the tiny models' operations are too small to split, and a second OpenMP thread spins
    waiting for work. tests/worker/engine/test_pipeline_generation.py took 14.6 CPU-seconds with one
    thread and 100.5 with two on the busy two-core dev VM (172 s against 858 s of wall time)."""
    import torch

    from worker.tiny.model_dir import build_tiny_model_dir

    torch.set_num_threads(1)
    return build_tiny_model_dir(tmp_path_factory.getbasetemp() / "tiny-models")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path):
    """The tiny profile loaded through the real loading path, on the CPU."""
    from worker.engine.devices import DevicePolicy
    from worker.engine.loading import load_engine

    return load_engine(tiny_model_dir, DevicePolicy.decide(Settings(_env_file=None, device="cpu")))


@pytest.fixture(scope="session")
def fast_tiny_engine(tiny_model_dir: Path):
    """The tiny profile as the fast engine builds it, without compiling (the CPU's share of it)."""
    from worker.engine.devices import DevicePolicy
    from worker.engine.fast_mode import FastOptions
    from worker.engine.loading import load_engine

    return load_engine(tiny_model_dir, DevicePolicy.decide(Settings(_env_file=None, device="cpu")), fast=FastOptions())
