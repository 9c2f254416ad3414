"""The built-in viewer's page, `/viewer/{org}/studies/{study}`: the markup and script that fetch
the study's metadata and frames from the organisation's DICOMweb root and draw them."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exchange.errors import NotHeld
from oix.access import requester_of
from portal.layout import render


async def viewer_page(request: Request) -> Response:
    """Opening the viewer retrieves the study: audited as DICOM Instances Transferred
    (PS3.15 A.5.3.7) through the archive; a study the organisation does not hold is a 404 page."""
    org, study_uid = request.path_params["org"], request.path_params["study"]
    archive = request.app.state.services.archive
    try:
        held = await run_in_threadpool(archive.held, org, requester_of(request), "viewer page", study_uid)
    except NotHeld:
        return await render(request, "viewer.html", {"study_uid": study_uid, "held": 0}, status=404)
    return await render(request, "viewer.html", {
        "study_uid": study_uid, "held": len(held), "dicomweb_root": f"/dicomweb/{org}"})


ROUTES = [Route("/viewer/{org}/studies/{study}", viewer_page, methods=["GET"])]
