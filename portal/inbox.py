"""`/orgs/{org}/inbox`: the transfers an organisation received, clinical emergencies pinned
first, with filters and paging; `/orgs/{org}/inbox/rows` is the same table's rows alone, which
inbox.js fetches every few seconds so that a new transfer appears without a reload."""

from __future__ import annotations

import hashlib
from urllib.parse import urlencode
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exchange.access import Requester
from exchange.errors import ExchangeError
from exchange.transfers import Transfers, TransferState, Urgency
from oix.access import requester_of
from portal.layout import failure_page, render, status_of
from portal.studies import StudySummary, studies
from storage.tables import Transfer
from storage.transfers import TransferFilter

PAGE_SIZE = 25
# Where a transfer's copies still count down to expiry (the retention TRANSITIONS from these).
EXPIRING = {TransferState.DELIVERED.value, TransferState.VIEWED.value, TransferState.IMPORTED.value,
            TransferState.REJECTED.value}


@dataclass(frozen=True)
class Listed:
    """One row of an inbox or a sent list: the transfer and the studies it bundles as held."""

    transfer: Transfer
    studies: list[StudySummary]
    expires_in: str

    @property
    def images(self) -> int:
        return sum(study.images for study in self.studies)

    @property
    def modalities(self) -> list[str]:
        return sorted({modality for study in self.studies for modality in study.modalities})

    @property
    def first(self) -> StudySummary | None:
        return self.studies[0] if self.studies else None


@dataclass(frozen=True)
class InboxQuery:
    state: str = ""
    urgency: str = ""
    patient: str = ""
    page: int = 1

    @classmethod
    def of(cls, request: Request) -> "InboxQuery":
        params = request.query_params
        state = params.get("state", "")
        urgency = params.get("urgency", "")
        page = params.get("page", "1")
        return cls(state if state in {s.value for s in TransferState} else "",
                   urgency if urgency in {u.value for u in Urgency} else "",
                   params.get("patient", "").strip()[:64], int(page) if page.isdigit() and int(page) > 0 else 1)

    def where(self) -> TransferFilter:
        return TransferFilter(state=self.state or None, urgency=self.urgency or None, patient_id=self.patient or None)

    def link(self, page: int) -> str:
        values = [(name, value) for name, value in (("state", self.state), ("urgency", self.urgency),
                                                   ("patient", self.patient)) if value]
        return "?" + urlencode([*values, ("page", str(page))])


def listed(transfers: Transfers, org: str, rows: list[Transfer], requester: Requester) -> list[Listed]:
    """The rows with their studies as `org` holds them (one QIDO search, audited) and the time
    until the received copies expire (the destination's retention period from delivery)."""
    uids = {row.id: [study.study_uid for study in transfers.view(org, row.id).studies] for row in rows}
    held = studies(transfers.archive, org, [uid for found in uids.values() for uid in found], requester)
    retention = timedelta(days=transfers.directory.require(org).retention_days)
    now = datetime.now(timezone.utc)
    return [Listed(row, [held[uid] for uid in uids[row.id] if uid in held],
                   _expires_in(row, org, retention, now)) for row in rows]


def _expires_in(transfer: Transfer, org: str, retention: timedelta, now: datetime) -> str:
    if transfer.destination != org or transfer.state not in EXPIRING:
        return ""
    if transfer.retained:
        return "retained"
    created = transfer.created_at if transfer.created_at.tzinfo else transfer.created_at.replace(tzinfo=timezone.utc)
    left = created + retention - now
    if left.total_seconds() <= 0:
        return "due now"
    return f"{left.days} days" if left.days >= 2 else f"{int(left.total_seconds() // 3600)} hours"


async def _inbox_context(request: Request) -> dict:
    org = request.path_params["org"]
    query = InboxQuery.of(request)
    transfers: Transfers = request.app.state.transfers
    requester = requester_of(request)

    def read() -> tuple[int, list[Listed]]:
        total, rows = transfers.inbox(org, query.where(), PAGE_SIZE, (query.page - 1) * PAGE_SIZE, requester)
        return total, listed(transfers, org, rows, requester)

    total, rows = await run_in_threadpool(read)
    pages = max(1, -(-total // PAGE_SIZE))
    return {"rows": rows, "total": total, "query": query, "pages": pages,
            "states": [s.value for s in TransferState], "urgencies": [u.value for u in Urgency]}


async def inbox_page(request: Request) -> Response:
    try:
        context = await _inbox_context(request)
    except ExchangeError as failure:
        return await failure_page(request, str(failure), status_of(failure))
    return await render(request, "inbox.html", context, section="inbox")


async def inbox_rows(request: Request) -> Response:
    """The table body alone, for inbox.js to swap in. Polled every few seconds, it answers
    304 Not Modified (RFC 9110 13.1.2) while the inbox has not changed, so the audited list
    of patients is read, and recorded, only when there is something new to show."""
    try:
        version = await run_in_threadpool(request.app.state.transfers.inbox_version, request.path_params["org"])
        # The hour is part of it: the rows' "expires in" moves on even when nothing arrives.
        tag = hashlib.sha256(f"{version} {datetime.now(timezone.utc):%Y%m%d%H} {request.url.query}".encode())
        etag = f'"{tag.hexdigest()[:24]}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        context = await _inbox_context(request)
    except ExchangeError as failure:
        return await failure_page(request, str(failure), status_of(failure))
    response = await render(request, "inbox_rows.html", context)
    response.headers["ETag"] = etag
    return response


ROUTES = [
    Route("/orgs/{org}/inbox", inbox_page, methods=["GET"]),
    Route("/orgs/{org}/inbox/rows", inbox_rows, methods=["GET"]),
]
