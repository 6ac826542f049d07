"""Request dependencies: the clients the lifespan created, the settings, the caller's identity.

Routes take what they need as annotated parameters, so tests and later features (API keys) swap
one function instead of editing routes.

Example::

    @router.get("/x")
    def handler(store: StoreDep, owner: OwnerDep): ...
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from shared.job_store import JobStore
from shared.settings import Settings
from shared.storage import Storage


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_celery(request: Request) -> Any:
    return request.app.state.celery


def get_owner(request: Request) -> str | None:
    """The API key id of the caller; None while auth is not enforced.

    The API-keys work replaces this with a Bearer-token check; routes already scope jobs by it.
    """
    return None


def base_url(request: Request) -> str:
    """Base for the absolute URLs in responses: public_api_url, else the request's own."""
    configured = request.app.state.settings.public_api_url
    return (configured or str(request.base_url)).rstrip("/")


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CeleryDep = Annotated[Any, Depends(get_celery)]
OwnerDep = Annotated[str | None, Depends(get_owner)]
BaseUrlDep = Annotated[str, Depends(base_url)]
