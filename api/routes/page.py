"""The web page at ``/``: plain HTML, CSS and JavaScript shipped inside the ``api`` package
(``api/web/``), served as they are — no build step, nothing fetched from elsewhere.

The page reads ``GET /api/v1/info`` for the parameter ranges and the server's profile, submits to
the same routes any client uses, and follows a job with ``GET /api/v1/jobs/{id}/events``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
STATIC_PREFIX = "/web"

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    # browsers ask for it on every page whatever the page links: an answer, not a 404 in each log
    return FileResponse(WEB_DIR / "favicon.ico", media_type="image/x-icon",
                        headers={"Cache-Control": "max-age=86400"})


def install_page(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets under ``/web/``."""
    app.include_router(router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=WEB_DIR), name="web")
