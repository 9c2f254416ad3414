"""The conformance statement over HTTP: `/conformance` (HTML) and `/conformance.json`, for the
limits this server runs with."""

from __future__ import annotations

from functools import lru_cache

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from conformance.render import statement_html
from conformance.statement import conformance_statement
from dicomweb.context import DicomWebLimits, context_of


@lru_cache(maxsize=4)
def _documents(limits: DicomWebLimits) -> tuple[str, bytes]:
    statement = conformance_statement(limits)
    return statement_html(statement), orjson.dumps(statement, option=orjson.OPT_INDENT_2)


async def statement_page(request: Request) -> Response:
    return HTMLResponse(_documents(context_of(request).limits)[0])


async def statement_json(request: Request) -> Response:
    return Response(_documents(context_of(request).limits)[1], media_type="application/json")


ROUTES = [
    Route("/conformance", statement_page, methods=["GET"]),
    Route("/conformance.json", statement_json, methods=["GET"]),
]
