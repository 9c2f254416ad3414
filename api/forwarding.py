"""`/api/orgs/{org}/forwarding`: an organisation's admins add rules that push the transfers it
receives to its PACS over STOW-RS, list them with how each forwarding stands (per job and per
instance), and remove them."""

from __future__ import annotations

from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import json_body, json_response
from dicomweb.errors import BadRequest
from exchange.forwarding import ForwardingJob, ForwardingRule, RuleMatch
from oix.access import requester_of
from storage.tables import ForwardedInstance, as_utc

MATCH_FIELDS = ("urgency", "modality", "sender")


def describe(rule: ForwardingRule) -> dict:
    return {"id": rule.id, "name": rule.name, "target_url": rule.target_url,
            "authorization": rule.has_authorization,  # whether one is sent; its value is never shown
            "match": {"urgency": list(rule.match.urgencies), "modality": list(rule.match.modalities),
                      "sender": list(rule.match.senders)},
            "mark_imported": rule.mark_imported, "created_by": rule.created_by,
            "created_at": _time(rule.created_at), "removed_at": _time(rule.disabled_at)}


def _job(job: ForwardingJob) -> dict:
    return {"id": job.id, "rule_id": job.rule_id, "transfer": job.transfer_id, "state": job.state.value,
            "attempts": job.attempts, "max_attempts": job.max_attempts,
            "next_attempt_at": _time(job.next_attempt_at), "last_error": job.last_error,
            "created_at": _time(job.created_at), "finished_at": _time(job.finished_at),
            "instances": dict(job.instances)}


def _instance(record: ForwardedInstance) -> dict:
    return {"rule_id": record.rule_id, "transfer": record.transfer_id, "study_uid": record.study_uid,
            "series_uid": record.series_uid, "sop_instance_uid": record.sop_instance_uid, "state": record.state,
            "attempts": record.attempts, "last_error": record.last_error,
            "updated_at": _time(as_utc(record.updated_at)),
            "sent_at": _time(as_utc(record.sent_at) if record.sent_at else None)}


async def list_forwarding(request: Request) -> Response:
    """The rules, the latest forwarding jobs with their instances' states, and the latest
    per-instance records (`?transfer=` narrows those to one transfer)."""
    forwarding = request.app.state.services.forwarding
    org = request.path_params["org"]
    transfer = request.query_params.get("transfer") or None
    rules = await run_in_threadpool(forwarding.of_org, org)
    jobs = await run_in_threadpool(forwarding.jobs, org, 50)
    instances = await run_in_threadpool(forwarding.instances, org, transfer, 500)
    return json_response({"rules": [describe(rule) for rule in rules], "jobs": [_job(job) for job in jobs],
                          "instances": [_instance(record) for record in instances]})


async def add_rule(request: Request) -> Response:
    """Body: {"target_url": "https://pacs.example.nhs.uk/dicom-web", "name": "Main PACS",
    "authorization": "Bearer …" (optional, never shown again), "match": {"urgency": ["emergency"],
    "modality": ["CT"], "sender": ["RJ1"]} (each optional: empty matches any), "mark_imported": true}."""
    body = await json_body(request)
    match = body.get("match") or {}
    if not isinstance(match, dict) or set(match) - set(MATCH_FIELDS):
        raise BadRequest(f"match is an object with any of {', '.join(MATCH_FIELDS)}")
    values = {}
    for name in MATCH_FIELDS:
        given = match.get(name) or []
        given = [given] if isinstance(given, str) else given
        if not isinstance(given, list) or not all(isinstance(value, str) for value in given):
            raise BadRequest(f"match.{name} is a list of strings")
        values[name] = tuple(given)
    mark_imported = body.get("mark_imported", False)
    if not isinstance(mark_imported, bool):
        raise BadRequest("mark_imported is true or false")
    added = await run_in_threadpool(
        request.app.state.services.forwarding.add, requester_of(request), request.path_params["org"],
        str(body.get("target_url", "")), name=str(body.get("name", "")),
        match=RuleMatch(values["urgency"], values["modality"], values["sender"]), mark_imported=mark_imported,
        authorization=str(body.get("authorization") or ""))
    return json_response(describe(added), status=201)


async def remove_rule(request: Request) -> Response:
    rule_id = request.path_params["rule"]
    if not rule_id.isdigit():
        raise BadRequest("a forwarding rule id is a number")
    await run_in_threadpool(request.app.state.services.forwarding.remove, requester_of(request),
                            request.path_params["org"], int(rule_id))
    return Response(status_code=204)


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


ROUTES = [
    Route("/orgs/{org}/forwarding", list_forwarding, methods=["GET"]),
    Route("/orgs/{org}/forwarding", add_rule, methods=["POST"]),
    Route("/orgs/{org}/forwarding/{rule}", remove_rule, methods=["DELETE"]),
]
