"""Request dependencies: the clients the lifespan created, the settings, the caller's identity.

Routes take what they need as annotated parameters, so tests and later features (API keys) swap
one function instead of editing routes.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in the threadpool, one
thread hop per dependency per request, which cost more than the lookups themselves. The one that
does blocking I/O (an API key's Redis lookup) hands just that part to the threadpool.

Example::

    @router.get("/x")
    def handler(store: StoreDep, owner: OwnerDep): ...
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.rate_limit_headers import STATE_KEY as RATE_STATE_KEY
from shared.access.api_keys import ApiKey
from shared.errors import ErrorCode, IdentityBodyError
from shared.jobs.store import JobStore
from shared.settings import Settings
from shared.storage import Storage


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> JobStore:
    return request.app.state.store


async def get_storage(request: Request) -> Storage:
    return request.app.state.storage


async def get_celery(request: Request) -> Any:
    return request.app.state.celery


# Declared so OpenAPI carries a bearer security scheme and /docs shows "Authorize"; the header
# itself is read below (auto_error=False: our 401 has the house error shape, not FastAPI's 403).
bearer_scheme = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                           description="An API key from `idbody keys create`, sent as `Authorization: Bearer <key>`.")


async def get_api_key(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> ApiKey | None:
    """The caller's API key from ``Authorization: Bearer <key>``, its request rate counted.

    401 unauthorized without a valid key; 429 rate_limited (with Retry-After) over its rate. Only
    the explicit development setting ``auth_disabled`` lets requests without a key through (as
    nobody's: they see only jobs submitted without a key); a valid key is still honoured then, and
    an empty header (``Authorization: Bearer `` from an unset shell variable) counts as none.
    """
    state = request.app.state
    token = _bearer_token(request.headers.get("authorization"))
    if not token and state.settings.auth_disabled:
        return None
    key, rate = await run_in_threadpool(_authenticate, state, token)
    # the RateLimit-* headers go out with whatever response the route builds (api.rate_limit_headers)
    setattr(request.state, RATE_STATE_KEY, rate)
    return key


def _authenticate(state: Any, token: str | None) -> tuple[ApiKey, Any]:
    """Blocking part of ``get_api_key``: the key lookup and its rate count (Redis)."""
    key = state.api_keys.authenticate(token) if token else None
    if key is None:
        raise IdentityBodyError(
            ErrorCode.UNAUTHORIZED,
            "Send a valid API key as 'Authorization: Bearer <key>' (create one with 'idbody keys create').",
        )
    return key, state.rate_limiter.check_rate(key.id, key.rate_limit_per_min)


def _bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


async def get_owner(key: Annotated[ApiKey | None, Depends(get_api_key)]) -> str | None:
    """The API key id of the caller; None when auth is disabled and no key was sent."""
    return key.id if key is not None else None


async def get_submit(request: Request) -> Any:
    return request.app.state.submit


async def get_job_end(request: Request) -> Any:
    return request.app.state.job_end


async def base_url(request: Request) -> str:
    """Base for the absolute URLs in responses: public_api_url, else the request's own."""
    configured = request.app.state.settings.public_api_url
    return (configured or str(request.base_url)).rstrip("/")


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CeleryDep = Annotated[Any, Depends(get_celery)]
ApiKeyDep = Annotated[ApiKey | None, Depends(get_api_key)]
OwnerDep = Annotated[str | None, Depends(get_owner)]
BaseUrlDep = Annotated[str, Depends(base_url)]
SubmitDep = Annotated[Any, Depends(get_submit)]
JobEndDep = Annotated[Any, Depends(get_job_end)]
