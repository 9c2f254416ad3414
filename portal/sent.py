"""`/orgs/{org}/sent`: the transfers an organisation sent, each with its delivery receipts (the
receiver's steps: delivered, viewed, imported, rejected with the reason) and the reports the
receiver returned."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exchange.errors import ExchangeError
from exchange.transfers import Transfers, TransferState
from oix.access import requester_of
from portal.inbox import PAGE_SIZE, InboxQuery
from portal.layout import failure_page, render, status_of
from storage.tables import Transfer, TransferEvent

RECEIPTS = {TransferState.DELIVERED.value, TransferState.VIEWED.value, TransferState.IMPORTED.value,
            TransferState.REJECTED.value, TransferState.EXPIRED.value}
REPORT_RETURNED = "report returned"  # how Transfers.return_reports logs a reply


@dataclass(frozen=True)
class SentTransfer:
    transfer: Transfer
    receipts: list[TransferEvent]
    reports_returned: list[TransferEvent]


async def sent_page(request: Request) -> Response:
    org = request.path_params["org"]
    query = InboxQuery.of(request)
    transfers: Transfers = request.app.state.transfers
    requester = requester_of(request)

    def read() -> tuple[int, list[SentTransfer]]:
        total, rows = transfers.outbox(org, query.where(), PAGE_SIZE, (query.page - 1) * PAGE_SIZE, requester)
        found = []
        histories = transfers.histories(org, rows)
        for row in rows:
            history = histories[row.id]
            found.append(SentTransfer(
                row, [event for event in history if event.state in RECEIPTS and not
                      event.detail.startswith(REPORT_RETURNED)],
                [event for event in history if event.detail.startswith(REPORT_RETURNED)]))
        return total, found

    try:
        total, rows = await run_in_threadpool(read)
    except ExchangeError as failure:
        return await failure_page(request, str(failure), status_of(failure))
    return await render(request, "sent.html", {
        "rows": rows, "total": total, "query": query, "pages": max(1, -(-total // PAGE_SIZE)),
        "states": [s.value for s in TransferState]}, section="sent")


ROUTES = [Route("/orgs/{org}/sent", sent_page, methods=["GET"])]
