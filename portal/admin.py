"""An organisation's admin pages, `/orgs/{org}/admin…`: members and roles, the retention of
received copies, API keys, auto-forward rules, webhooks, usage per month and patient access
links. Every change is the same audited service call the JSON API makes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from exchange.access import Role
from exchange.api_keys import parse_lifetime
from exchange.errors import ExchangeError
from exchange.forwarding import RuleMatch
from exchange.patient_access import DEFAULT_LIFETIME, MAX_LIFETIME, link_state
from exchange.transfers import Urgency
from exchange.usage import Month
from exchange.webhooks import WebhookEvent
from oix.access import requester_of
from portal.layout import render, status_of

ADMIN = "/orgs/{org}/admin"
NOTICES = {  # what a redirect after a change says: fixed text, never text from the URL
    "role": "The role was changed.",
    "retention": "The retention period was changed.",
    "key-revoked": "The API key was revoked: it no longer works.",
    "rule-removed": "The forwarding rule was removed.",
    "webhook-removed": "The webhook was removed.",
    "link-revoked": "The patient access link was revoked: it no longer works.",
}


async def _form(request: Request) -> FormData:
    return await request.form(max_fields=32, max_part_size=8192)


def _done(request: Request, page: str, notice: str) -> Response:
    return RedirectResponse(f"/orgs/{request.path_params['org']}/admin{page}?notice={notice}", status_code=303)


async def _admin_page(request: Request, template: str, context: dict, status: int = 200) -> Response:
    notice = NOTICES.get(request.query_params.get("notice", ""), "")
    return await render(request, template, {"notice": notice, **context}, status=status, section="admin")


def _failed(exc: ExchangeError) -> dict:
    return {"error": str(exc), "status": status_of(exc)}


# -- members, roles and retention ------------------------------------------------------------------

async def members_page(request: Request, outcome: dict | None = None) -> Response:
    services = request.app.state.services
    org = request.path_params["org"]
    members = await run_in_threadpool(services.accounts.members, org)
    organisation = await run_in_threadpool(services.directory.require, org)
    outcome = outcome or {}
    return await _admin_page(request, "admin.html", {
        "members": members, "roles": [role.value for role in Role], "organisation": organisation,
        "error": outcome.get("error", "")}, outcome.get("status", 200))


async def grant_role(request: Request) -> Response:
    """Give an existing local account a role here, or change the role it has."""
    form = await _form(request)
    try:
        role = Role(str(form.get("role", "")))
    except ValueError:
        return await members_page(request, {"error": "Choose a role: viewer, sender or admin.", "status": 400})
    try:
        await run_in_threadpool(request.app.state.services.admin.grant, requester_of(request),
                                str(form.get("username", "")).strip(), request.path_params["org"], role)
    except ExchangeError as exc:
        return await members_page(request, _failed(exc))
    return _done(request, "", "role")


async def change_retention(request: Request) -> Response:
    form = await _form(request)
    days = str(form.get("retention_days", "")).strip()
    try:
        await run_in_threadpool(request.app.state.services.admin.update_organisation, requester_of(request),
                                request.path_params["org"], {"retention_days": int(days) if days.isdigit() else days})
    except ExchangeError as exc:
        return await members_page(request, _failed(exc))
    return _done(request, "", "retention")


# -- API keys -----------------------------------------------------------------------------------------

async def keys_page(request: Request, outcome: dict | None = None) -> Response:
    keys = await run_in_threadpool(request.app.state.services.admin.keys_of, request.path_params["org"])
    outcome = outcome or {}
    return await _admin_page(request, "admin_keys.html", {
        "keys": sorted(keys, key=lambda key: key.created_at, reverse=True), "roles": [role.value for role in Role],
        "issued": outcome.get("issued"), "error": outcome.get("error", "")}, outcome.get("status", 200))


async def create_key(request: Request) -> Response:
    """The new key is on the answer page once, as the API shows it once."""
    form = await _form(request)
    try:
        role = Role(str(form.get("role", "")))
        lifetime = parse_lifetime(str(form.get("expires", "90d")))
        issued = await run_in_threadpool(request.app.state.services.admin.create_key, requester_of(request),
                                         request.path_params["org"], role, str(form.get("name", ""))[:200], lifetime)
    except ValueError:
        return await keys_page(request, {"error": "Choose a role: viewer, sender or admin.", "status": 400})
    except ExchangeError as exc:
        return await keys_page(request, _failed(exc))
    return await keys_page(request, {"issued": issued, "status": 201})


async def revoke_key(request: Request) -> Response:
    try:
        await run_in_threadpool(request.app.state.services.admin.revoke_key, requester_of(request),
                                request.path_params["org"], request.path_params["key_id"])
    except ExchangeError as exc:
        return await keys_page(request, _failed(exc))
    return _done(request, "/keys", "key-revoked")


# -- auto-forward rules ---------------------------------------------------------------------------------

async def forwarding_page(request: Request, outcome: dict | None = None) -> Response:
    rules = await run_in_threadpool(request.app.state.services.forwarding.of_org, request.path_params["org"])
    outcome = outcome or {}
    return await _admin_page(request, "admin_forwarding.html", {
        "rules": rules, "urgencies": [urgency.value for urgency in Urgency], "added": outcome.get("added"),
        "error": outcome.get("error", "")}, outcome.get("status", 200))


def _words(text: str) -> tuple[str, ...]:
    return tuple(word for word in text.replace(",", " ").split() if word)


async def add_rule(request: Request) -> Response:
    form = await _form(request)
    match = RuleMatch(tuple(str(value) for value in form.getlist("urgency")),
                      tuple(word.upper() for word in _words(str(form.get("modality", "")))),
                      _words(str(form.get("sender", ""))))
    try:
        added = await run_in_threadpool(
            request.app.state.services.forwarding.add, requester_of(request), request.path_params["org"],
            str(form.get("target_url", "")).strip(), name=str(form.get("name", ""))[:200], match=match,
            mark_imported=form.get("mark_imported") == "on", authorization=str(form.get("authorization", "")))
    except ExchangeError as exc:
        return await forwarding_page(request, _failed(exc))
    return await forwarding_page(request, {"added": added, "status": 201})


async def remove_rule(request: Request) -> Response:
    rule = request.path_params["rule"]
    try:
        if not rule.isdigit():
            raise ExchangeError("a forwarding rule id is a number")
        await run_in_threadpool(request.app.state.services.forwarding.remove, requester_of(request),
                                request.path_params["org"], int(rule))
    except ExchangeError as exc:
        return await forwarding_page(request, _failed(exc))
    return _done(request, "/forwarding", "rule-removed")


# -- webhooks ---------------------------------------------------------------------------------------------

async def webhooks_page(request: Request, outcome: dict | None = None) -> Response:
    subscriptions = await run_in_threadpool(request.app.state.services.webhooks.of_org, request.path_params["org"])
    outcome = outcome or {}
    return await _admin_page(request, "admin_webhooks.html", {
        "webhooks": subscriptions, "events": [event.value for event in WebhookEvent],
        "added": outcome.get("added"), "error": outcome.get("error", "")}, outcome.get("status", 200))


async def add_webhook(request: Request) -> Response:
    """The signing secret is on the answer page once, as the API shows it once."""
    form = await _form(request)
    try:
        added = await run_in_threadpool(request.app.state.services.webhooks.add, requester_of(request),
                                        request.path_params["org"], str(form.get("url", "")).strip(),
                                        [str(event) for event in form.getlist("events")],
                                        str(form.get("description", ""))[:200])
    except ExchangeError as exc:
        return await webhooks_page(request, _failed(exc))
    return await webhooks_page(request, {"added": added, "status": 201})


async def remove_webhook(request: Request) -> Response:
    webhook = request.path_params["webhook"]
    try:
        if not webhook.isdigit():
            raise ExchangeError("a webhook id is a number")
        await run_in_threadpool(request.app.state.services.webhooks.remove, requester_of(request),
                                request.path_params["org"], int(webhook))
    except ExchangeError as exc:
        return await webhooks_page(request, _failed(exc))
    return _done(request, "/webhooks", "webhook-removed")


# -- usage ------------------------------------------------------------------------------------------------

CHART_WIDTH, CHART_HEIGHT, CHART_BASE = 720, 220, 180  # the bar chart's viewBox, and the bars' baseline


def usage_chart(months) -> dict:
    """Bars of transfers sent and received per month, laid out here so the page draws plain SVG."""
    top = max([1, *(max(month.sent.transfers, month.received.transfers) for month in months)])
    slot = CHART_WIDTH / max(1, len(months))
    bars = []
    for index, month in enumerate(months):
        for offset, kind, count in ((0.15, "sent", month.sent.transfers), (0.5, "received", month.received.transfers)):
            height = round(count / top * (CHART_BASE - 20), 1)
            bars.append({"kind": kind, "x": round(index * slot + offset * slot, 1), "width": round(0.33 * slot, 1),
                         "y": round(CHART_BASE - height, 1), "height": height, "count": count,
                         "month": str(month.month)})
    labels = [{"x": round((index + 0.5) * slot, 1), "text": str(month.month)} for index, month in enumerate(months)]
    return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "base": CHART_BASE, "top": top, "bars": bars,
            "labels": labels}


async def usage_page(request: Request) -> Response:
    last = Month.of(datetime.now(timezone.utc))
    months = await run_in_threadpool(request.app.state.services.usage.months, request.path_params["org"],
                                     last.minus(11), last)
    return await _admin_page(request, "admin_usage.html", {"months": months, "chart": usage_chart(months)})


# -- patient access links ---------------------------------------------------------------------------------

async def patient_access_page(request: Request, outcome: dict | None = None) -> Response:
    service = request.app.state.patient_access
    org = request.path_params["org"]
    links = await run_in_threadpool(service.of_org, requester_of(request), org)
    patients = await run_in_threadpool(service.patients, requester_of(request), org)
    outcome = outcome or {}
    return await _admin_page(request, "admin_patient_access.html", {
        "links": [(link, link_state(link)) for link in links], "patients": patients,
        "default_days": DEFAULT_LIFETIME.days, "max_days": MAX_LIFETIME.days, "issued": outcome.get("issued"),
        "base_url": str(request.base_url).rstrip("/"), "error": outcome.get("error", "")},
        outcome.get("status", 200))


async def create_link(request: Request) -> Response:
    """The link holds a token shown on the answer page once; only its hash is kept."""
    form = await _form(request)
    days = str(form.get("days", "") or DEFAULT_LIFETIME.days).strip()
    if not days.isdigit() or not 1 <= int(days) <= MAX_LIFETIME.days:
        return await patient_access_page(request, {
            "error": f"A link lasts from 1 to {MAX_LIFETIME.days} days.", "status": 400})
    try:
        issued = await run_in_threadpool(request.app.state.patient_access.create, requester_of(request),
                                         request.path_params["org"], str(form.get("patient_id", "")),
                                         timedelta(days=int(days)))
    except ExchangeError as exc:
        return await patient_access_page(request, _failed(exc))
    return await patient_access_page(request, {"issued": issued, "status": 201})


async def revoke_link(request: Request) -> Response:
    try:
        await run_in_threadpool(request.app.state.patient_access.revoke, requester_of(request),
                                request.path_params["org"], request.path_params["link"])
    except ExchangeError as exc:
        return await patient_access_page(request, {**_failed(exc), "status": 404})
    return _done(request, "/patient-access", "link-revoked")


ROUTES = [
    Route(ADMIN, members_page, methods=["GET"]),
    Route(ADMIN + "/members", grant_role, methods=["POST"]),
    Route(ADMIN + "/retention", change_retention, methods=["POST"]),
    Route(ADMIN + "/keys", keys_page, methods=["GET"]),
    Route(ADMIN + "/keys", create_key, methods=["POST"]),
    Route(ADMIN + "/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Route(ADMIN + "/forwarding", forwarding_page, methods=["GET"]),
    Route(ADMIN + "/forwarding", add_rule, methods=["POST"]),
    Route(ADMIN + "/forwarding/{rule}/delete", remove_rule, methods=["POST"]),
    Route(ADMIN + "/webhooks", webhooks_page, methods=["GET"]),
    Route(ADMIN + "/webhooks", add_webhook, methods=["POST"]),
    Route(ADMIN + "/webhooks/{webhook}/delete", remove_webhook, methods=["POST"]),
    Route(ADMIN + "/usage", usage_page, methods=["GET"]),
    Route(ADMIN + "/patient-access", patient_access_page, methods=["GET"]),
    Route(ADMIN + "/patient-access", create_link, methods=["POST"]),
    Route(ADMIN + "/patient-access/{link}/revoke", revoke_link, methods=["POST"]),
]
