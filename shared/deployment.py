"""Where the absolute URLs that leave the service point, and the settings a container deployment
must give before it serves.

In a container the gateway binds 0.0.0.0 and knows no name clients reach it by, so URLs built from
its bind address (``http://0.0.0.0:8000/...``) would reach nobody. The images set
``IDBODY_DEPLOYMENT=container``; there ``IDBODY_PUBLIC_API_URL`` is required, and the gateway and
the io worker (which renders webhook bodies) refuse to start without it.

Example::

    check_deployment(settings)            # raises DeploymentSettingsError with a sentence to act on
    public_api_base(settings)             # "https://idbody.example.com" or "http://127.0.0.1:8000"
"""

from __future__ import annotations

from typing import Any

from shared.settings import ENV_PREFIX

PUBLIC_API_URL_SETTING = f"{ENV_PREFIX}PUBLIC_API_URL"


class DeploymentSettingsError(RuntimeError):
    """A setting a container deployment needs is missing; the message names it."""


def check_deployment(settings: Any) -> None:
    """Refuse a container deployment whose status/result/webhook URLs would point nowhere."""
    if settings.deployment == "container" and not settings.public_api_url:
        raise DeploymentSettingsError(
            f"{PUBLIC_API_URL_SETTING} is not set. In a container deployment "
            f"({ENV_PREFIX}DEPLOYMENT=container) it is required: set it to the URL clients and webhook "
            f"receivers reach the gateway at, e.g. {PUBLIC_API_URL_SETTING}=https://idbody.example.com "
            "(docker-compose.yml and deploy/k8s/settings.yaml have a line for it)."
        )


def public_api_base(settings: Any) -> str:
    """Base of status_url/result_url outside a request (webhooks): the configured public URL, else
    the gateway on this machine's loopback (a local, non-container run)."""
    if settings.public_api_url:
        return settings.public_api_url.rstrip("/")
    host = settings.api_host if settings.api_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{settings.api_port}"
