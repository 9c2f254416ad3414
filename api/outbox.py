"""The outbox service roots, `/dicomweb/{org}/outbox/{dest}/` (and `…/urgent/`, `…/emergency/`):
a plain STOW-RS client with a base URL and a token sends to another organisation by storing
there (PS3.18 10.5). The objects land in the destination's holdings and open or extend a
transfer per patient; `X-OIX-Note` may carry a note for the receiver, `X-OIX-Recipient` the
person or team it is meant for."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from dicomweb.context import service_root
from dicomweb.stow import receive_instances
from exchange.archive import Incoming
from exchange.transfers import Urgency
from oix.access import requester_of
from storage.instances import AddOutcome

NOTE_HEADER = "x-oix-note"
RECIPIENT_HEADER = "x-oix-recipient"  # the person or team the sender means it for


def _outbox(urgency: Urgency):
    async def store_to_destination(request: Request) -> Response:
        transfers = request.app.state.transfers
        org, destination = request.path_params["org"], request.path_params["dest"]
        await run_in_threadpool(transfers.require_pair, org, destination)
        requester = requester_of(request)
        note, recipient = request.headers.get(NOTE_HEADER, ""), request.headers.get(RECIPIENT_HEADER, "")

        def keep(accepted: list[Incoming], refused: list[str]) -> list[AddOutcome]:
            return transfers.receive(org, destination, accepted, refused, requester, urgency, note, recipient)

        return await receive_instances(request, keep, service_root(request, destination))

    store_to_destination.__name__ = f"store_{urgency.value}_to_destination"
    return store_to_destination


def _stow_routes(urgency: Urgency) -> list[Route]:
    endpoint = _outbox(urgency)
    return [Route("/studies", endpoint, methods=["POST"]), Route("/studies/{study}", endpoint, methods=["POST"])]


def outbox_mount() -> Mount:
    return Mount("/dicomweb/{org}/outbox/{dest}", routes=[
        *_stow_routes(Urgency.ROUTINE),
        Mount("/urgent", routes=_stow_routes(Urgency.URGENT)),
        Mount("/emergency", routes=_stow_routes(Urgency.EMERGENCY)),
    ])
