"""The supervisors' web console: one page and its scripts, served by the service itself.

No build step: plain ES modules in `assets/js`, the vendored libraries in `assets/vendor`
(`vendor.json` names their versions, licences and hashes). The page talks only to the API,
signed in with a session cookie (api/session.py), so it sees and may do exactly what the
token it was opened with may.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.staticfiles import PathLike
from starlette.types import Scope

ASSETS = Path(__file__).resolve().parent / "assets"

# Everything from this origin, nothing inline, nothing from elsewhere: supervisors' networks
# are closed, and a page that can load no foreign script cannot be made to run one.
POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "style-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console")
async def console_without_slash() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/")
async def console() -> FileResponse:
    return FileResponse(ASSETS / "index.html", media_type="text/html", headers=HEADERS)


class _Assets(StaticFiles):
    """Static files that revalidate (a new release is picked up at once) and never sniff."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(HEADERS)
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/console/assets", _Assets(directory=ASSETS), name="console-assets")
