"""The TaskOverflow web page: ``/`` and its static files (plain HTML/CSS/JS, no build step)."""

from __future__ import annotations

from pathlib import Path

from litestar import Router, get
from litestar.handlers import HTTPRouteHandler
from litestar.response import File
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


@get("/", include_in_schema=False, media_type="text/html")
async def index() -> File:
    return File(
        STATIC_DIR / "index.html", content_disposition_type="inline", media_type="text/html"
    )


def page_routes() -> list[HTTPRouteHandler | Router]:
    static: Router = create_static_files_router(
        path="/static", directories=[STATIC_DIR], include_in_schema=False
    )
    return [index, static]
