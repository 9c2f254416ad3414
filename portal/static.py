"""The portal's and viewer's own stylesheets and scripts, served by OIX itself (no CDN, no build
step): `/static/{path}` from portal/static/."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

STATIC_DIRECTORY = Path(__file__).parent / "static"
_FILES = StaticFiles(directory=STATIC_DIRECTORY)


async def static_file(request: Request) -> Response:
    # StaticFiles resolves the path inside the directory (no '..' escapes) and answers
    # ETag / Last-Modified conditional requests.
    return await _FILES.get_response(request.path_params["path"], request.scope)


ROUTES = [Route("/static/{path:path}", static_file, methods=["GET"])]
