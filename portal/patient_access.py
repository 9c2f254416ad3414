"""What a patient reaches through a patient access link, `/access/{token}` (public: the token is
the credential): their studies in the built-in viewer, a read-only DICOMweb subset for just
those studies under `/access/{token}/dicomweb`, and a ZIP of them as a DICOM File-set."""

from __future__ import annotations

import anyio
import shutil
import tempfile
from pathlib import Path

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from dicomweb import rendered, wado
from exchange.patient_access import OpenLink, PatientAccess, PatientAccessLinkGone, UnknownPatientAccessLink
from oix.access import REQUESTER, requester_of
from portal.context import TEMPLATES

ROOT = "/access/{token}"
DICOMWEB = ROOT + "/dicomweb"
_STUDY = DICOMWEB + "/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"
# The token is in the URL: no page of it is kept by a cache or named to another site.
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def _service(request: Request) -> PatientAccess:
    return request.app.state.patient_access


async def _opened(request: Request) -> OpenLink:
    requester = requester_of(request)  # the anonymous requester the guard made: its address and agent
    return await run_in_threadpool(_service(request).open, request.path_params["token"], requester.client_address,
                                   requester.user_agent, requester.request_id)


def _refusal(request: Request, exc: Exception) -> Response:
    gone = isinstance(exc, PatientAccessLinkGone)
    return TEMPLATES.TemplateResponse(request, "patient_access_gone.html", {"gone": gone, "message": str(exc)},
                                      status_code=410 if gone else 404, headers=PRIVATE)


async def access_page(request: Request) -> Response:
    try:
        opened = await _opened(request)
    except (UnknownPatientAccessLink, PatientAccessLinkGone) as exc:
        return _refusal(request, exc)
    studies = await run_in_threadpool(_service(request).studies, opened)
    chosen = request.query_params.get("study")
    shown = next((study for study in studies if study.study_uid == chosen), studies[0] if studies else None)
    root = f"/access/{request.path_params['token']}"
    return TEMPLATES.TemplateResponse(request, "patient_access.html", {
        "link": opened.link, "studies": studies, "shown": shown, "root": root, "dicomweb_root": root + "/dicomweb",
    }, headers=PRIVATE)


# A public URL: at most this many ZIPs are built at once (each reads and writes a whole study);
# more wait their turn instead of filling the disk and the worker threads.
ZIP_BUILDS = anyio.Semaphore(2)


async def download(request: Request) -> Response:
    """The studies as a ZIP holding a DICOM File-set: built in a temporary directory (never the
    whole study in memory), sent as a file, then removed."""
    try:
        opened = await _opened(request)
    except (UnknownPatientAccessLink, PatientAccessLinkGone) as exc:
        return _refusal(request, exc)
    directory = Path(tempfile.mkdtemp(prefix="oix-access-"))
    archive_path = directory / "studies.zip"
    try:
        async with ZIP_BUILDS:
            await run_in_threadpool(_service(request).write_file_set, opened, directory, archive_path)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return FileResponse(archive_path, media_type="application/zip",
                        filename=f"oix-studies-{opened.link.link_id}.zip", headers=PRIVATE,
                        background=BackgroundTask(shutil.rmtree, directory, ignore_errors=True))


def _delegated(handler):
    """The organisation's own WADO-RS handler, for a study of the link only: scoped to the link's
    organisation and audited as a read by the link (PS3.15 A.5.3.7)."""

    async def serve(request: Request) -> Response:
        try:
            opened = await _opened(request)
            await run_in_threadpool(_service(request).require_study, opened, request.path_params["study"])
        except (UnknownPatientAccessLink, PatientAccessLinkGone) as exc:
            return Response(str(exc), status_code=410 if isinstance(exc, PatientAccessLinkGone) else 404,
                            media_type="text/plain", headers=PRIVATE)
        params = {name: value for name, value in request.path_params.items() if name != "token"}
        scope = {**request.scope, "path_params": {**params, "org": opened.link.org}, REQUESTER: opened.requester}
        response = await handler(Request(scope, request.receive))
        response.headers.update(PRIVATE)
        return response

    serve.__name__ = f"patient_access_{handler.__name__}"
    return serve


ROUTES = [
    Route(ROOT, access_page, methods=["GET"]),
    Route(ROOT + "/download", download, methods=["GET"]),
    # PS3.18 10.4.1.1.4 metadata, 10.4.1.1.6 frames, 10.4.1.1.7-8 rendered and thumbnail
    Route(_STUDY + "/metadata", _delegated(wado.retrieve_metadata), methods=["GET"]),
    Route(_SERIES + "/metadata", _delegated(wado.retrieve_metadata), methods=["GET"]),
    Route(_INSTANCE + "/frames/{frames}", _delegated(wado.retrieve_frames), methods=["GET"]),
    Route(_STUDY + "/thumbnail", _delegated(rendered.retrieve_thumbnail), methods=["GET"]),
    Route(_SERIES + "/thumbnail", _delegated(rendered.retrieve_thumbnail), methods=["GET"]),
    Route(_INSTANCE + "/thumbnail", _delegated(rendered.retrieve_thumbnail), methods=["GET"]),
    Route(_INSTANCE + "/rendered", _delegated(rendered.retrieve_rendered), methods=["GET"]),
    Route(_INSTANCE + "/frames/{frames}/rendered", _delegated(rendered.retrieve_rendered), methods=["GET"]),
]
