"""`/api/orgs/{org}/audit`: an organisation's admins search its audit trail over the last 12
months (period, patient, study, actor, action, outcome; paged), or export it as CSV, FHIR AuditEvent
(IHE Basic Audit Log Patterns) or DICOM audit messages (PS3.15 A.5). Reading is audited too."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api.context import api_of, json_response, query_count, query_time
from dicomweb.errors import BadRequest
from exchange.audit import AuditAction, AuditEvent, AuditRecord, require_searchable, searchable_since
from exchange.audit_formats import AuditSource, csv_lines, dicom_audit_messages, fhir_bundle
from oix.access import requester_of

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
EXPORTS = {  # format parameter → media type
    "csv": "text/csv; charset=utf-8",
    "fhir": "application/fhir+json",
    "dicom": "application/xml",
}


async def search_audit(request: Request) -> Response:
    org = request.path_params["org"]
    params = request.query_params
    now = datetime.now(timezone.utc)
    since = query_time(params.get("since"), "since") or searchable_since(now)
    until = query_time(params.get("until"), "until") or now + timedelta(seconds=1)
    require_searchable(since, until, now)
    action = params.get("action") or None
    if action is not None and action not in {a.value for a in AuditAction}:
        raise BadRequest(f"unknown action '{action}': one of {', '.join(a.value for a in AuditAction)}")
    outcome = params.get("outcome") or None
    if outcome not in (None, "success", "failure"):
        raise BadRequest(f"unknown outcome '{outcome}': success or failure (any PS3.15 failure outcome)")
    filters = {"patient": params.get("patient") or None, "study": params.get("study") or None,
               "actor": params.get("actor") or None, "action": action,
               "succeeded": None if outcome is None else outcome == "success"}
    export = params.get("format") or _export_from_accept(request)
    if export is not None and export not in EXPORTS and export != "json":
        raise BadRequest(f"format must be json, {', '.join(EXPORTS)}")
    api = api_of(request)
    described = ", ".join(f"{name}={value}" for name, value in filters.items() if value)
    api.audit.record(AuditEvent.for_request(
        requester_of(request), AuditAction.AUDIT_LOG_USED, org=org,
        detail=f"{export or 'json'} {since:%Y-%m-%dT%H:%M:%SZ}..{until:%Y-%m-%dT%H:%M:%SZ} {described}".strip()))
    await run_in_threadpool(api.audit.settle)  # what is asked for includes what just happened
    if export in EXPORTS:
        records = api.audit.iterate(org, since, until, **filters)
        headers = {"Content-Disposition": f'attachment; filename="oix-audit-{org}-{now:%Y%m%d}.{_extension(export)}"'}
        if export == "csv":
            return StreamingResponse(iterate_in_threadpool(csv_lines(records)), media_type=EXPORTS[export],
                                     headers=headers)
        source = AuditSource(base_url=str(request.base_url))
        body = await run_in_threadpool(_render, export, records, source)
        return Response(body, media_type=EXPORTS[export], headers=headers)
    limit = query_count(params.get("limit"), "limit", DEFAULT_LIMIT, MAX_LIMIT)
    offset = query_count(params.get("offset"), "offset", 0, None)
    records = await run_in_threadpool(api.audit.search, org, since, until, limit=limit, offset=offset, **filters)
    total = await run_in_threadpool(api.audit.count, org, since, until, **filters)
    return json_response({"total": total, "limit": limit, "offset": offset,
                          "events": [describe(record) for record in records]})


def describe(record: AuditRecord) -> dict:
    event = record.event
    return {
        "sequence": record.sequence,
        "occurred_at": event.occurred_at.isoformat(),
        "action": event.action.value,
        "event_id": event.action.event_id.value,
        "event_action_code": event.action.action_code.value,
        "outcome": int(event.outcome),
        "outcome_description": event.outcome_description,
        "actor": event.actor,
        "actor_kind": event.actor_kind.value,
        "org": event.org,
        "patients": [{"id": patient.id, "issuer": patient.issuer} for patient in event.patients],
        "studies": list(event.studies),
        "transfer": event.transfer,
        "client_address": event.client_address,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "detail": event.detail,
        "hash": record.hash,
    }


def _render(export: str, records, source: AuditSource) -> bytes:
    if export == "fhir":
        return orjson.dumps(fhir_bundle(records, source))
    return dicom_audit_messages(records, source)


def _extension(export: str) -> str:
    return {"csv": "csv", "fhir": "json", "dicom": "xml"}[export]


def _export_from_accept(request: Request) -> str | None:
    accept = request.headers.get("accept", "")
    for export, media_type in EXPORTS.items():
        if media_type.split(";")[0] in accept:
            return export
    return None


ROUTES = [Route("/orgs/{org}/audit", search_audit, methods=["GET"])]
