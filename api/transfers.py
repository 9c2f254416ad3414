"""The exchange API for one organisation: send studies it holds (`POST …/transfers`), its inbox
and outbox (emergencies first, then oldest first), one transfer with its history, and the steps
of a transfer's life (complete, view, reject)."""

from __future__ import annotations

from datetime import datetime, timezone

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import json_body, json_response, query_count, query_time
from dicomweb.errors import BadRequest
from exchange.transfers import Step, TransferState, TransferView, Urgency
from oix.access import requester_of
from storage.tables import Transfer
from storage.transfers import TransferFilter

DEFAULT_LIMIT, MAX_LIMIT = 50, 500


def describe(transfer: Transfer) -> dict:
    return {
        "id": transfer.id, "sender": transfer.sender, "destination": transfer.destination,
        "urgency": transfer.urgency, "note": transfer.note, "intended_recipient": transfer.intended_recipient,
        "patient_id": transfer.patient_id, "patient_name": transfer.patient_name, "state": transfer.state,
        "via": transfer.via, "has_report": transfer.has_report, "retained": transfer.retained,
        "reason": transfer.reason, "created_by": transfer.created_by,
        "created_at": _time(transfer.created_at), "updated_at": _time(transfer.updated_at),
    }


def describe_view(view: TransferView) -> dict:
    return {
        **describe(view.transfer),
        "studies": [{"study_uid": study.study_uid, "instances": study.instances} for study in view.studies],
        "history": [{"state": event.state, "actor": event.actor, "org": event.org, "at": _time(event.at),
                     "detail": event.detail} for event in view.history],
    }


async def send_held(request: Request) -> Response:
    """Body: {"destination": "RGT", "studies": ["1.2…"], "urgency": "emergency", "note": "…",
    "intended_recipient": "…"}."""
    body = await json_body(request)
    studies = body.get("studies")
    if not isinstance(studies, list) or not all(isinstance(uid, str) for uid in studies):
        raise BadRequest("studies must be a list of Study Instance UIDs")
    view = await run_in_threadpool(
        request.app.state.transfers.send_held, request.path_params["org"], str(body.get("destination", "")),
        studies, requester_of(request), _urgency(body.get("urgency", "routine")), str(body.get("note", "")),
        str(body.get("intended_recipient", "")))
    return json_response(describe_view(view), status=201)


async def inbox(request: Request) -> Response:
    return await _listing(request, request.app.state.transfers.inbox)


async def outbox(request: Request) -> Response:
    return await _listing(request, request.app.state.transfers.outbox)


async def _listing(request: Request, listing) -> Response:
    params = request.query_params
    state = params.get("state") or None
    if state is not None and state not in {s.value for s in TransferState}:
        raise BadRequest(f"state must be one of {', '.join(s.value for s in TransferState)}")
    urgency = _urgency(params["urgency"]).value if params.get("urgency") else None
    where = TransferFilter(state=state, urgency=urgency, patient_id=params.get("patient") or None,
                           counterpart=params.get("counterpart") or None,
                           since=query_time(params.get("since"), "since"),
                           until=query_time(params.get("until"), "until"))
    limit = query_count(params.get("limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT)
    offset = query_count(params.get("offset"), "offset", 0, None)
    total, transfers = await run_in_threadpool(listing, request.path_params["org"], where, limit, offset,
                                               requester_of(request))
    return json_response({"total": total, "limit": limit, "offset": offset,
                          "transfers": [describe(transfer) for transfer in transfers]})


async def one_transfer(request: Request) -> Response:
    view = await run_in_threadpool(request.app.state.transfers.read, request.path_params["org"],
                                   request.path_params["transfer"], requester_of(request))
    return json_response(describe_view(view))


async def transfer_reports(request: Request) -> Response:
    """The text of the reports a transfer carries, to copy into a RIS."""
    texts = await run_in_threadpool(request.app.state.transfers.report_texts, request.path_params["org"],
                                    request.path_params["transfer"], requester_of(request))
    return json_response({"reports": [
        {"sop_instance_uid": text.sop_instance_uid, "sop_class_uid": text.sop_class_uid, "title": text.title,
         "text": text.text, "text_extracted": text.text_extracted} for text in texts]})


def _step(step: Step):
    async def take(request: Request) -> Response:
        body = await json_body(request)
        view = await run_in_threadpool(request.app.state.transfers.take_step, request.path_params["org"],
                                       request.path_params["transfer"], step, requester_of(request),
                                       str(body.get("reason", "")))
        return json_response(describe_view(view))

    take.__name__ = f"{step.value}_transfer"
    return take


def _urgency(value) -> Urgency:
    try:
        return Urgency(str(value))
    except ValueError:
        raise BadRequest(f"urgency must be one of {', '.join(u.value for u in Urgency)}") from None


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()


ROUTES = [
    Route("/orgs/{org}/transfers", send_held, methods=["POST"]),
    Route("/orgs/{org}/inbox", inbox, methods=["GET"]),
    Route("/orgs/{org}/outbox", outbox, methods=["GET"]),
    Route("/orgs/{org}/transfers/{transfer}", one_transfer, methods=["GET"]),
    Route("/orgs/{org}/transfers/{transfer}/reports", transfer_reports, methods=["GET"]),
    Route("/orgs/{org}/transfers/{transfer}/complete", _step(Step.COMPLETE), methods=["POST"]),
    Route("/orgs/{org}/transfers/{transfer}/viewed", _step(Step.VIEW), methods=["POST"]),
    Route("/orgs/{org}/transfers/{transfer}/reject", _step(Step.REJECT), methods=["POST"]),
]
