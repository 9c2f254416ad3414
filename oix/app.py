"""The ASGI application: wires storage, the exchange and the HTTP layers from Settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conformance.routes import ROUTES as CONFORMANCE_ROUTES
from dicomweb.context import DicomWebContext, ParserPool
from dicomweb.errors import EXCEPTION_HANDLERS
from dicomweb.routes import service_root_mount
from dicomweb.checks import check_parts
from exchange.archive import Archive
from exchange.organisations import OrganisationDirectory
from oix.observability import Metrics, RequestLogMiddleware
from oix.settings import Settings
from storage.blobs import FileBlobStore
from storage.database import Database, database_url
from storage.instances import InstanceIndex
from storage.organisations import OrganisationTable


@dataclass
class Services:
    database: Database
    directory: OrganisationDirectory
    archive: Archive


def open_services(settings: Settings) -> Services:
    """Everything below HTTP, opened on the configured data directory and database."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(database_url(settings.database_url, settings.data_dir))
    database.create_schema()
    directory = OrganisationDirectory(OrganisationTable(database))
    archive = Archive(directory, InstanceIndex(database), FileBlobStore(settings.data_dir))
    return Services(database, directory, archive)


def _lifespan(services: Services, parser_pool: ParserPool | None):
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if parser_pool is not None:
            await run_in_threadpool(parser_pool.start)
        yield
        if parser_pool is not None:
            parser_pool.shutdown()
        services.database.dispose()

    return lifespan


def create_app(settings: Settings, services: Services | None = None) -> Starlette:
    services = services or open_services(settings)
    parser_pool = ParserPool(settings.parse_workers) if settings.parse_workers > 0 else None
    metrics = Metrics()
    metrics.watch_holdings(services.archive.index.totals)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def prometheus(_request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    middleware = [Middleware(RequestLogMiddleware, metrics=metrics)]
    if settings.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"], allow_headers=["*"],
            expose_headers=["Content-Type", "Content-Length", "Warning", "X-Request-Id"]))
    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/metrics", prometheus), *CONFORMANCE_ROUTES,
                service_root_mount()],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=_lifespan(services, parser_pool),
    )
    app.state.dicomweb = DicomWebContext(services.archive, settings.limits, parser_pool or check_parts)
    app.state.services = services
    return app
