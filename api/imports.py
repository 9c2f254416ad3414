"""`POST /api/orgs/{org}/transfers/{transfer}/import`: the receiver imports a transfer into its
own identity domain (IHE RAD Import Reconciliation Workflow). Body: the local identifiers and
demographics — {"patient_id", "issuer_of_patient_id" (default: the organisation's identity
domain), "accession_number", "patient_name", "birth_date", "sex", "nhs_number"} — and
"confirm": true once the differences a first call answered with (409) have been checked."""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import json_body, json_response
from api.transfers import describe_view
from dicomweb.checks import Failure, PartToCheck
from dicomweb.context import context_of
from exchange.errors import ExchangeError
from exchange.imports import ReconciliationNeeded
from exchange.reconciliation import LocalIdentity
from oix.access import requester_of

DICOM = "application/dicom"


class ImportFailed(ExchangeError):
    pass


def reconciled_records_checker(request: Request) -> Callable[[list], list]:
    """What an import does with the reconciled objects it wrote: check them as STOW-RS checks
    what it receives (PS3.18 10.5), so only objects the index can serve are imported. The JSON
    API and the portal's import form both use it."""
    context = context_of(request)

    def make_records(writers: list) -> list:
        parts = [PartToCheck(number, str(writer.path), DICOM, writer.key, writer.size, writer.keyring)
                 for number, writer in enumerate(writers, start=1)]
        checked = context.check_parts(parts, None, context.limits.bulk_threshold)
        failures = [item for item in checked if isinstance(item, Failure)]
        if failures:
            raise ImportFailed(f"a reconciled object could not be read back: {failures[0].message}")
        return checked

    return make_records


async def import_transfer(request: Request) -> Response:
    org = request.path_params["org"]
    body = await json_body(request)
    services = request.app.state.services
    organisation = await run_in_threadpool(services.directory.require, org)
    local = LocalIdentity(
        patient_id=str(body.get("patient_id", "")),
        issuer_of_patient_id=str(body.get("issuer_of_patient_id") or organisation.identity_domain or org),
        accession_number=str(body["accession_number"]) if body.get("accession_number") is not None else None,
        patient_name=str(body.get("patient_name", "")), birth_date=str(body.get("birth_date", "")),
        sex=str(body.get("sex", "")), nhs_number=str(body["nhs_number"]) if body.get("nhs_number") else None)
    try:
        report = await run_in_threadpool(services.imports.import_transfer, org, request.path_params["transfer"],
                                         local, body.get("confirm") is True, requester_of(request),
                                         reconciled_records_checker(request))
    except ReconciliationNeeded as needed:
        return json_response({"status": 409, "error": str(needed), "differences": [
            {"attribute": d.attribute.value, "received": d.incoming, "local": d.local} for d in needed.differences]},
            status=409)
    return json_response({**describe_view(report.transfer), "imported_instances": report.instances,
                          "confirmed": [{"attribute": d.attribute.value, "received": d.incoming, "local": d.local}
                                        for d in report.confirmed]})


ROUTES = [Route("/orgs/{org}/transfers/{transfer}/import", import_transfer, methods=["POST"])]
