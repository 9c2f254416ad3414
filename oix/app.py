"""The ASGI application: wires storage, the exchange and the HTTP layers from Settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from api.audit import ROUTES as AUDIT_ROUTES
from api.directory import ROUTES as DIRECTORY_ROUTES
from api.forwarding import ROUTES as FORWARDING_ROUTES
from api.imports import ROUTES as IMPORT_ROUTES
from api.organisation import ROUTES as ORGANISATION_ROUTES
from api.outbox import outbox_mount
from api.retention import ROUTES as RETENTION_ROUTES
from api.transfers import ROUTES as TRANSFER_ROUTES
from api.usage import ROUTES as USAGE_ROUTES
from api.webhooks import ROUTES as WEBHOOK_ROUTES
from api.context import ApiContext
from api.keys import ROUTES as KEY_ROUTES
from api.me import ROUTES as ME_ROUTES
from conformance.routes import ROUTES as CONFORMANCE_ROUTES
from dicomweb.context import DicomWebContext
from dicomweb.parser_pool import ParserPool
from dicomweb.errors import EXCEPTION_HANDLERS
from dicomweb.routes import service_root_mount
from dicomweb.checks import check_parts
from exchange.accounts import LocalAccounts
from exchange.administration import Administration
from exchange.api_keys import ApiKeys
from exchange.archive import Archive
from exchange.audit import AuditTrail
from exchange.organisations import OrganisationDirectory
from exchange.patient_access import PatientAccess
from exchange.sessions import PortalSessions
from exchange.imports import Imports
from exchange.forwarding import Forwarding
from exchange.jobs import Backoff, JobRunner
from exchange.retention import Retention
from exchange.transfers import Transfers
from exchange.usage import Usage
from exchange.webhooks import Webhooks
from oix.access import AccessAudit, AccessGate, guard_routes
from oix.authentication import Authenticator
from oix.cors import cors_middleware
from oix.observability import Metrics, RequestLogMiddleware
from oix.oidc import OidcVerifier
from oix.pacs import StowPacs
from oix.security_headers import SecurityHeadersMiddleware
from oix.settings import Settings
from portal.context import PortalContext
from portal.routes import ROUTES as PORTAL_ROUTES
from storage.at_rest import open_data_dir
from storage.blobs import FileBlobStore
from storage.credentials import AccountTable, ApiKeyTable, SessionTable
from storage.forwarding import ForwardingTable
from storage.jobs import JobQueue
from storage.retention import RetentionTable
from storage.transfers import TransferTable
from storage.usage import UsageTable
from storage.webhooks import WebhookTable
from storage.database import Database, database_url, sqlite_file
from storage.instances import InstanceIndex
from storage.keyring import Keyring
from storage.organisations import OrganisationTable
from storage.patient_access import PatientAccessTable


@dataclass
class Services:
    database: Database
    directory: OrganisationDirectory
    archive: Archive
    audit: AuditTrail
    accounts: LocalAccounts
    api_keys: ApiKeys
    sessions: PortalSessions
    admin: Administration
    transfers: Transfers
    webhooks: Webhooks
    webhook_runner: JobRunner  # started by `oix serve` only, not by the CLI
    imports: Imports
    forwarding: Forwarding | None = None
    forward_runner: JobRunner | None = None  # started by `oix serve` only, not by the CLI
    retention: Retention | None = None
    usage: Usage | None = None

    def close(self) -> None:
        if self.forwarding is not None:
            self.forwarding.stop()  # a job in flight ends after its current request
        if self.forward_runner is not None:
            self.forward_runner.stop()
        self.webhook_runner.stop()
        self.audit.stop()  # writes what is still buffered
        self.database.dispose()


def open_database(settings: Settings) -> tuple[Database, Keyring | None]:
    """The configured index, its schema brought up to date, and the data directory's keys."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = database_url(settings.database_url, settings.data_dir)
    keyring = Keyring.load(settings.encryption_key_file, settings.encryption_key)
    database = Database(url, index_key=open_data_dir(settings.data_dir, keyring, sqlite_file(url)))
    database.create_schema()
    return database, keyring


def open_services(settings: Settings) -> Services:
    """Everything below HTTP, opened on the configured data directory and database."""
    database, keyring = open_database(settings)
    directory = OrganisationDirectory(OrganisationTable(database))
    audit = AuditTrail(database, retention=timedelta(days=settings.audit_retention_days),
                       enabled=settings.audit_enabled, shared=settings.workers > 1)
    archive = Archive(directory, InstanceIndex(database), FileBlobStore(settings.data_dir, keyring), audit)
    accounts = LocalAccounts(AccountTable(database), directory)
    api_keys = ApiKeys(ApiKeyTable(database), directory)
    sessions = PortalSessions(SessionTable(database), AccountTable(database))
    admin = Administration(directory, accounts, api_keys, audit, sessions)
    queue = JobQueue(database)
    webhooks = Webhooks(WebhookTable(database), queue, audit, timeout=settings.webhook_timeout_seconds)
    # Webhooks have a runner of their own: no backlog of other work holds up an emergency.
    webhook_runner = JobRunner(queue, webhooks.handlers, name="oix-webhooks")
    transfers = Transfers(TransferTable(database), archive, directory, audit,
                          idle=timedelta(seconds=settings.transfer_idle_seconds))
    archive.on_store(transfers.return_reports)
    retention = Retention(RetentionTable(), transfers, interval=timedelta(seconds=settings.retention_interval_seconds))
    archive.on_store(retention.note_own_store)  # what an organisation stores itself, retention never removes
    forwarding = Forwarding(ForwardingTable(database), queue, archive, transfers, audit,
                            StowPacs(settings.forward_timeout_seconds),
                            batch_instances=settings.forward_batch_instances)
    transfers.notify = _notifier(webhooks, forwarding)  # set here: forwarding needs the transfers first
    # Forwarding has a runner of its own too: a PACS that is down holds up neither webhooks nor others.
    forward_runner = JobRunner(queue, forwarding.handlers, name="oix-forwarding", backoff=Backoff(
        first=timedelta(seconds=settings.forward_backoff_seconds),
        cap=timedelta(seconds=settings.forward_backoff_max_seconds)))
    return Services(database, directory, archive, audit, accounts, api_keys,
                    sessions, admin, transfers, webhooks, webhook_runner,
                    Imports(transfers, archive, audit), forwarding=forwarding, forward_runner=forward_runner,
                    retention=retention, usage=Usage(UsageTable(database), directory))


def _notifier(webhooks: Webhooks, forwarding: Forwarding | None = None):
    """What a transfer's destination is told: what happened and where to look, never patient data;
    and a delivered transfer is queued for the destination's PACS, by its forwarding rules."""

    def notify(connection, event: str, transfer) -> None:
        if event == "transfer.delivered" and forwarding is not None:
            forwarding.on_delivered(connection, transfer)
        webhooks.notify(transfer.destination, event, {
            "transfer": transfer.id, "sender": transfer.sender,
            "destination": transfer.destination, "urgency": transfer.urgency,
            "url": f"/api/orgs/{transfer.destination}/transfers/{transfer.id}"}, connection=connection)

    return notify


def _lifespan(services: Services, parser_pool: ParserPool | None, http_client: httpx.AsyncClient):
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        services.audit.start()
        services.webhook_runner.start()
        if services.forward_runner is not None:
            services.forward_runner.start()
        if parser_pool is not None:
            await run_in_threadpool(parser_pool.start)
        delivery = asyncio.create_task(_deliver_idle_transfers(services.transfers))
        expiry = asyncio.create_task(_expire_received_copies(services.retention))
        sessions = asyncio.create_task(_end_expired_sessions(services.sessions))
        yield
        delivery.cancel()
        expiry.cancel()
        sessions.cancel()
        if parser_pool is not None:
            parser_pool.shutdown()
        await http_client.aclose()
        services.close()

    return lifespan


async def _deliver_idle_transfers(transfers: Transfers) -> None:
    """Outbox streams quiet for the idle time become delivered (checked a few times per idle time)."""
    period = max(0.5, min(30.0, transfers.idle.total_seconds() / 4))
    while True:
        await asyncio.sleep(period)
        try:
            await run_in_threadpool(transfers.deliver_idle)
        except Exception:  # the next round tries again; a failure here must not stop the loop
            logging.getLogger("oix").exception("delivering idle transfers failed")


async def _end_expired_sessions(sessions: PortalSessions, period: float = 600.0) -> None:
    """Expired portal sessions and abandoned OIDC sign-ins are removed every ten minutes."""
    while True:
        await asyncio.sleep(period)
        try:
            await run_in_threadpool(sessions.remove_expired)
        except Exception:  # the next round tries again
            logging.getLogger("oix").exception("removing expired sessions failed")


async def _expire_received_copies(retention: Retention | None) -> None:
    """Received copies past their destination's retention period go, every retention interval."""
    if retention is None or retention.interval <= timedelta(0):
        return  # `oix retention run`, scheduled outside, does it instead
    while True:
        await asyncio.sleep(retention.interval.total_seconds())
        try:
            await run_in_threadpool(retention.run)
        except Exception:  # the next round tries again; a failure here must not stop the loop
            logging.getLogger("oix").exception("expiring received copies failed")


def create_app(settings: Settings, services: Services | None = None) -> Starlette:
    services = services or open_services(settings)
    parser_pool = ParserPool(settings.parse_workers) if settings.parse_workers > 0 else None
    metrics = Metrics()
    metrics.watch_holdings(services.archive.index.totals)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def prometheus(_request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    http_client = httpx.AsyncClient()
    oidc = OidcVerifier(settings.oidc, http_client) if settings.oidc else None
    authenticator = Authenticator(required=settings.auth_required, api_keys=services.api_keys,
                                  sessions=services.sessions, oidc=oidc)
    routes = [Route("/healthz", healthz), Route("/metrics", prometheus), *CONFORMANCE_ROUTES,
              *PORTAL_ROUTES,
              Mount("/api", routes=[*ME_ROUTES, *DIRECTORY_ROUTES, *ORGANISATION_ROUTES, *KEY_ROUTES,
                                    *AUDIT_ROUTES, *TRANSFER_ROUTES, *IMPORT_ROUTES, *WEBHOOK_ROUTES,
                                    *FORWARDING_ROUTES, *RETENTION_ROUTES, *USAGE_ROUTES]),
              outbox_mount(), service_root_mount()]
    guard_routes(routes, AccessGate(authenticator, AccessAudit(services.audit)))

    tls = settings.tls_cert is not None
    middleware = [Middleware(RequestLogMiddleware, metrics=metrics), Middleware(SecurityHeadersMiddleware, tls=tls)]
    if settings.cors_origins:
        middleware.append(cors_middleware(settings.cors_origins))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=_lifespan(services, parser_pool, http_client),
    )
    app.state.dicomweb = DicomWebContext(services.archive, settings.limits, parser_pool or check_parts)
    app.state.services = services
    app.state.transfers = services.transfers
    app.state.api = ApiContext(services.admin, services.audit)
    app.state.portal = PortalContext(services.accounts, services.sessions, oidc, services.audit, secure_cookies=tls)
    app.state.patient_access = PatientAccess(PatientAccessTable(services.database), services.archive,
                                             services.directory, services.audit)
    return app
