"""`/orgs/{org}/transfers/{transfer}`: one transfer as a person works with it — its studies and
series with thumbnails, the note, the reports (text shown, a PDF opened), the history of its
states — and the receiver's actions: view the images (recording the viewed step), import with
reconciliation (IHE RAD Import Reconciliation Workflow: differences are shown side by side and
confirmed before anything is written), reject with a reason, retain past the retention period,
forward to another organisation."""

from __future__ import annotations

from pydicom.uid import EncapsulatedPDFStorage
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from api.imports import reconciled_records_checker
from exchange.errors import ExchangeError, InvalidTransferRequest, TransferStepRefused, UnknownOrganisation
from exchange.imports import ReconciliationNeeded
from exchange.reconciliation import InvalidLocalIdentity, LocalIdentity
from exchange.transfers import Step, Transfers, TransferView, Urgency
from oix.access import requester_of
from portal.layout import failure_page, render, status_of
from portal.studies import series_of, studies

MAX_FORM_FIELDS = 32
# What a redirect after an action says on the page (a fixed text, never reflected from the URL).
DONE = {"imported": "The transfer was imported into your records.", "rejected": "The transfer was rejected; "
        "the sender sees your reason.", "retained": "The copies will be kept past the retention period.",
        "released": "The copies will expire with the retention period again.",
        "forwarded": "The studies were sent on."}
IMPORT_FIELDS = ("patient_id", "issuer_of_patient_id", "accession_number", "patient_name", "birth_date", "sex",
                 "nhs_number")


def _page_data(request: Request) -> dict:
    """Everything the page shows, read through the services (each read audited)."""
    org, transfer_id = request.path_params["org"], request.path_params["transfer"]
    transfers: Transfers = request.app.state.transfers
    requester = requester_of(request)
    view: TransferView = transfers.read(org, transfer_id, requester)
    uids = [study.study_uid for study in view.studies]
    held = studies(transfers.archive, org, uids, requester)
    shown = [(held[uid], series_of(transfers.archive, org, uid, requester)) for uid in uids if uid in held]
    reports = transfers.report_texts(org, transfer_id, requester) if shown else []
    organisation = transfers.directory.require(org)
    return {"view": view, "t": view.transfer, "studies": shown, "reports": reports,
            "receiver": view.transfer.destination == org, "identity_domain": organisation.identity_domain or org,
            "directory": [o for o in transfers.directory.all() if o.slug != org],
            "urgencies": [u.value for u in Urgency], "pdf_class": EncapsulatedPDFStorage}


async def _show(request: Request, status: int = 200, **extra) -> Response:
    try:
        data = await run_in_threadpool(_page_data, request)
    except ExchangeError as failure:  # an action's own refusal (status >= 400) says more than the page's
        return await failure_page(request, extra.get("error") or str(failure),
                                  status if status >= 400 else status_of(failure))
    done = DONE.get(request.query_params.get("done", ""), "")
    return await render(request, "transfer.html", {**data, "done": done, "form": {}, **extra}, status=status,
                        section="inbox" if data["receiver"] else "sent")


async def transfer_page(request: Request) -> Response:
    return await _show(request)


def _back(request: Request, done: str) -> Response:
    org, transfer_id = request.path_params["org"], request.path_params["transfer"]
    return RedirectResponse(f"/orgs/{org}/transfers/{transfer_id}?done={done}", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form(max_fields=MAX_FORM_FIELDS, max_files=0)
    return {name: str(value) for name, value in form.items() if isinstance(value, str)}


async def open_images(request: Request) -> Response:
    """Record the viewed step (once: a transfer already viewed or imported stays as it is) and
    open the study in the viewer."""
    org, transfer_id = request.path_params["org"], request.path_params["transfer"]
    form = await _form(request)
    transfers: Transfers = request.app.state.transfers
    try:
        view = await run_in_threadpool(transfers.view, org, transfer_id)
        try:
            await run_in_threadpool(transfers.take_step, org, transfer_id, Step.VIEW, requester_of(request))
        except TransferStepRefused:
            pass  # viewed before, imported, or the sender's own look: the images open all the same
    except ExchangeError as failure:
        return await failure_page(request, str(failure), status_of(failure))
    uids = [study.study_uid for study in view.studies]
    study = form.get("study") if form.get("study") in uids else (uids[0] if uids else "")
    return RedirectResponse(f"/viewer/{org}/studies/{study}", status_code=303)


async def reject(request: Request) -> Response:
    form = await _form(request)
    transfers: Transfers = request.app.state.transfers
    try:
        await run_in_threadpool(transfers.take_step, request.path_params["org"], request.path_params["transfer"],
                                Step.REJECT, requester_of(request), form.get("reason", ""))
    except InvalidTransferRequest as failure:
        return await _show(request, 400, error=str(failure))
    except ExchangeError as failure:
        return await failure_page(request, str(failure), status_of(failure))
    return _back(request, "rejected")


def _retention(step: str):
    async def keep(request: Request) -> Response:
        retention = request.app.state.services.retention
        try:
            await run_in_threadpool(getattr(retention, step), request.path_params["org"],
                                    request.path_params["transfer"], requester_of(request))
        except ExchangeError as failure:
            return await failure_page(request, str(failure), status_of(failure))
        return _back(request, "retained" if step == "retain" else "released")

    keep.__name__ = f"{step}_transfer"
    return keep


async def forward(request: Request) -> Response:
    """Send the transfer's studies, as this organisation holds them, on to another organisation."""
    org, transfer_id = request.path_params["org"], request.path_params["transfer"]
    form = await _form(request)
    transfers: Transfers = request.app.state.transfers
    try:
        view = await run_in_threadpool(transfers.view, org, transfer_id)
        urgency = Urgency(form.get("urgency")) if form.get("urgency") in {u.value for u in Urgency} else Urgency.ROUTINE
        sent = await run_in_threadpool(transfers.send_held, org, form.get("destination", "").strip(),
                                       [study.study_uid for study in view.studies], requester_of(request), urgency,
                                       form.get("note", ""))
    except (InvalidTransferRequest, UnknownOrganisation) as failure:
        return await _show(request, 400, error=str(failure))
    except ExchangeError as failure:
        return await failure_page(request, str(failure), status_of(failure))
    return RedirectResponse(f"/orgs/{org}/transfers/{sent.transfer.id}?done=forwarded", status_code=303)


async def import_transfer(request: Request) -> Response:
    """First submission: the differences, if any, are shown with the form (nothing written);
    the second, with `confirm`, imports (IHE RAD IRWF)."""
    org = request.path_params["org"]
    form = await _form(request)
    services = request.app.state.services
    try:
        organisation = await run_in_threadpool(services.directory.require, org)
        local = LocalIdentity(
            patient_id=form.get("patient_id", ""),
            issuer_of_patient_id=form.get("issuer_of_patient_id") or organisation.identity_domain or org,
            accession_number=form.get("accession_number") or None, patient_name=form.get("patient_name", ""),
            birth_date=form.get("birth_date", "").replace("-", ""), sex=form.get("sex", ""),
            nhs_number=form.get("nhs_number") or None)
    except (InvalidLocalIdentity, ValueError) as failure:
        return await _show(request, 400, error=f"The local identifiers cannot be used: {failure}", form=form)
    try:
        await run_in_threadpool(services.imports.import_transfer, org, request.path_params["transfer"], local,
                                form.get("confirm") == "yes", requester_of(request), reconciled_records_checker(request))
    except ReconciliationNeeded as needed:
        return await _show(request, 409, differences=needed.differences, form=form)
    except ExchangeError as failure:
        return await failure_page(request, str(failure), status_of(failure))
    return _back(request, "imported")


async def report_document(request: Request) -> Response:
    """A PDF report, opened in the browser's own PDF viewer."""
    try:
        document = await run_in_threadpool(request.app.state.transfers.report_document, request.path_params["org"],
                                           request.path_params["transfer"], request.path_params["instance"],
                                           requester_of(request))
    except ExchangeError as failure:
        return await failure_page(request, str(failure), status_of(failure))
    return Response(document, media_type="application/pdf",
                    headers={"Content-Disposition": "inline", "Cache-Control": "no-store"})


_TRANSFER = "/orgs/{org}/transfers/{transfer}"
ROUTES = [
    Route(_TRANSFER, transfer_page, methods=["GET"]),
    Route(_TRANSFER + "/viewed", open_images, methods=["POST"]),
    Route(_TRANSFER + "/import", import_transfer, methods=["POST"]),
    Route(_TRANSFER + "/reject", reject, methods=["POST"]),
    Route(_TRANSFER + "/retain", _retention("retain"), methods=["POST"]),
    Route(_TRANSFER + "/release", _retention("release"), methods=["POST"]),
    Route(_TRANSFER + "/forward", forward, methods=["POST"]),
    Route(_TRANSFER + "/reports/{instance}", report_document, methods=["GET"]),
]
