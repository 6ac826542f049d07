"""Fixtures of the HTTP tests: the gateway served on loopback (tests/api/gateway.py)."""

from __future__ import annotations

import httpx
import pytest

from tests.api.gateway import Gateway, serve


@pytest.fixture
def gateway_settings(settings):
    return settings.model_copy(update={"max_upload_bytes": 512 * 1024, "max_image_pixels": 4_000_000,
                                       "max_wait_s": 30})


@pytest.fixture
def gateway(gateway_settings, redis_client):
    app, server, thread = serve(gateway_settings)
    base = f"http://127.0.0.1:{server.config.port}"
    with httpx.Client(base_url=base, timeout=60) as client:
        yield Gateway(app, client, base)
    server.should_exit = True
    thread.join(10)
