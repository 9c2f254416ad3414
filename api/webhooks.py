"""`/api/orgs/{org}/webhooks`: an organisation's admins subscribe URLs to its transfer events
(signed JSON POSTs, retried with backoff), list them, remove them, and see each delivery."""

from __future__ import annotations

from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import json_body, json_response
from dicomweb.errors import BadRequest
from exchange.webhooks import WebhookEvent, WebhookSubscription
from oix.access import requester_of


def describe(subscription: WebhookSubscription) -> dict:
    return {"id": subscription.id, "url": subscription.url, "events": [e.value for e in subscription.events],
            "description": subscription.description, "created_by": subscription.created_by,
            "created_at": _time(subscription.created_at), "removed_at": _time(subscription.disabled_at)}


async def list_webhooks(request: Request) -> Response:
    webhooks = request.app.state.services.webhooks
    org = request.path_params["org"]
    subscriptions = await run_in_threadpool(webhooks.of_org, org)
    deliveries = await run_in_threadpool(webhooks.deliveries, org, 50)
    return json_response({
        "webhooks": [describe(subscription) for subscription in subscriptions],
        "deliveries": [{"id": d.id, "webhook_id": d.webhook_id, "event": d.event, "state": d.state.value,
                        "attempts": d.attempts, "max_attempts": d.max_attempts,
                        "next_attempt_at": _time(d.next_attempt_at), "last_error": d.last_error,
                        "created_at": _time(d.created_at), "finished_at": _time(d.finished_at)}
                       for d in deliveries]})


async def add_webhook(request: Request) -> Response:
    """Body: {"url": "https://ris.example/oix", "events": ["transfer.emergency", "transfer.delivered"],
    "description": "…"}. The signing secret is in the answer once and never again."""
    body = await json_body(request)
    events = body.get("events", [event.value for event in WebhookEvent])
    if not isinstance(events, list):
        raise BadRequest(f"events must be a list, from {', '.join(e.value for e in WebhookEvent)}")
    added = await run_in_threadpool(request.app.state.services.webhooks.add, requester_of(request),
                                    request.path_params["org"], str(body.get("url", "")), events,
                                    str(body.get("description", ""))[:200])
    return json_response({**describe(added.subscription), "secret": added.secret}, status=201)


async def remove_webhook(request: Request) -> Response:
    webhook_id = request.path_params["webhook"]
    if not webhook_id.isdigit():
        raise BadRequest("a webhook id is a number")
    await run_in_threadpool(request.app.state.services.webhooks.remove, requester_of(request),
                            request.path_params["org"], int(webhook_id))
    return Response(status_code=204)


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


ROUTES = [
    Route("/orgs/{org}/webhooks", list_webhooks, methods=["GET"]),
    Route("/orgs/{org}/webhooks", add_webhook, methods=["POST"]),
    Route("/orgs/{org}/webhooks/{webhook}", remove_webhook, methods=["DELETE"]),
]
