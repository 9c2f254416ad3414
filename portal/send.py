"""`/orgs/{org}/send`: find studies the organisation holds (QIDO search: patient, NHS number,
accession, date, modality) and send those of one patient to another organisation; or upload
DICOM files from the browser straight into a transfer (upload.js, STOW-RS to the outbox service
root). `/orgs/{org}/send/report` makes a PDF report into an Encapsulated PDF object of the
uploaded or chosen study (PS3.3 A.45.1) for upload.js or send_held.js to send with it."""

from __future__ import annotations

from datetime import datetime, timezone

import pydicom
from pydicom.errors import InvalidDicomError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from exchange.errors import ExchangeError, InvalidTransferRequest, NotHeld, UnknownOrganisation
from exchange.reports import MAX_REPORT_BYTES, ReportRefused, encapsulated_pdf
from exchange.transfers import Urgency
from oix.access import requester_of
from portal.layout import failure_page, render, status_of
from portal.studies import HoldingsSearch, search_studies

MAX_FORM_FIELDS = 256  # a study chosen per field
SEARCH_FIELDS = ("patient", "patient_id", "nhs_number", "accession", "date_from", "date_to", "modality")


async def _send_page(request: Request, status: int = 200, error: str = "", form: dict | None = None) -> Response:
    org = request.path_params["org"]
    params = request.query_params
    search = HoldingsSearch(**{name: params.get(name, "")[:64] for name in SEARCH_FIELDS})
    results = []
    if not search.empty:
        try:
            results = await run_in_threadpool(search_studies, request.app.state.transfers.archive, org, search,
                                              requester_of(request))
        except ExchangeError as failure:
            return await failure_page(request, str(failure), status_of(failure))
        except ValueError as failure:  # a value the index cannot match (a malformed date)
            error = error or f"The search could not be made: {failure}"
    directory = await run_in_threadpool(request.app.state.services.directory.all)
    return await render(request, "send.html", {
        "search": search, "results": results, "error": error, "form": form or {},
        "directory": [o for o in directory if o.slug != org], "urgencies": [u.value for u in Urgency],
    }, status=status, section="send")


async def send_page(request: Request) -> Response:
    return await _send_page(request)


async def send_held(request: Request) -> Response:
    """Send the chosen studies (of one patient) as one transfer."""
    org = request.path_params["org"]
    form = await request.form(max_fields=MAX_FORM_FIELDS, max_files=0)
    chosen = [str(uid) for uid in form.getlist("study")]
    fields = {name: str(form.get(name, "")) for name in ("destination", "urgency", "note", "intended_recipient")}
    if not chosen or not fields["destination"].strip():
        return await _send_page(request, 400, "Choose the studies to send and the organisation to send them to.",
                                fields)
    urgency = fields["urgency"] if fields["urgency"] in {u.value for u in Urgency} else Urgency.ROUTINE.value
    try:
        view = await run_in_threadpool(request.app.state.transfers.send_held, org, fields["destination"].strip(),
                                       chosen, requester_of(request), Urgency(urgency), fields["note"],
                                       fields["intended_recipient"])
    except (InvalidTransferRequest, UnknownOrganisation, NotHeld) as failure:
        return await _send_page(request, 400, str(failure), fields)
    return RedirectResponse(f"/orgs/{org}/transfers/{view.transfer.id}", status_code=303)


async def make_report(request: Request) -> Response:
    """multipart/form-data with `report` (the PDF) and either `study` (a DICOM file of the study
    it reports on, being uploaded) or `study_uid` (a study the organisation holds): answers the
    Encapsulated PDF object, application/dicom, made for that study."""
    form = await request.form(max_fields=4, max_files=2)
    report, study, study_uid = form.get("report"), form.get("study"), form.get("study_uid")
    if not isinstance(report, UploadFile) or not (isinstance(study, UploadFile) or isinstance(study_uid, str)):
        return Response("send the PDF as 'report', and a DICOM file of its study as 'study' or a study held as "
                        "'study_uid'", status_code=400, media_type="text/plain")
    pdf = await report.read(MAX_REPORT_BYTES + 1)
    requester = requester_of(request)
    title = (report.filename or "Report").rsplit(".", 1)[0][:64] or "Report"
    archive = request.app.state.services.archive

    def make() -> bytes:
        if isinstance(study, UploadFile):
            header = pydicom.dcmread(study.file, stop_before_pixels=True)
        else:  # the patient and study attributes of a held study (a read, audited as a retrieve)
            first = archive.held(request.path_params["org"], requester, "report header", study_uid)[0]
            with archive.open_blob(first.blob_key) as handle:
                header = pydicom.dcmread(handle, stop_before_pixels=True)
        return encapsulated_pdf(pdf, header, title=title, author=requester.principal.name or None,
                                when=datetime.now(timezone.utc))

    try:
        part10 = await run_in_threadpool(make)
    except NotHeld as failure:
        return Response(f"the report cannot be made: {failure}", status_code=404, media_type="text/plain")
    except (ReportRefused, InvalidDicomError, ValueError, EOFError) as failure:
        return Response(f"the report cannot be made: {failure}", status_code=400, media_type="text/plain")
    return Response(part10, media_type="application/dicom", headers={"Cache-Control": "no-store"})


ROUTES = [
    Route("/orgs/{org}/send", send_page, methods=["GET"]),
    Route("/orgs/{org}/send", send_held, methods=["POST"]),
    Route("/orgs/{org}/send/report", make_report, methods=["POST"]),
]
