"""An organisation's audit trail for its admins, `/orgs/{org}/audit`: the last 12 months of
events, filtered by action, actor, patient, outcome and dates, a page at a time, and the same
selection as CSV (the audit API's format, exchange/audit_formats.py). Reading it is audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from urllib.parse import urlencode

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from exchange.audit import AuditAction, AuditEvent, AuditRecord, AuditTrail, searchable_since
from exchange.audit_formats import csv_lines
from oix.access import requester_of
from portal.layout import render

PAGE_SIZE = 50
OUTCOMES = {"success": "Success", "failure": "Failure (any)"}  # PS3.15 A.5.1 EventOutcomeIndicator, grouped


@dataclass(frozen=True)
class AuditSelection:
    """The page's filters, as read from its query string; dates are whole UTC days."""

    action: str = ""
    actor: str = ""
    patient: str = ""
    outcome: str = ""
    since: date | None = None
    until: date | None = None
    page: int = 1

    @classmethod
    def of(cls, request: Request) -> tuple[AuditSelection, list[str]]:
        params = request.query_params
        problems = []
        action = params.get("action", "")
        if action and action not in {a.value for a in AuditAction}:
            problems.append(f"'{action}' is not an audit action")
            action = ""
        outcome = params.get("outcome", "")
        if outcome and outcome not in OUTCOMES:
            problems.append("the outcome is success or failure")
            outcome = ""
        dates = {}
        for name in ("since", "until"):
            try:
                dates[name] = date.fromisoformat(params[name]) if params.get(name) else None
            except ValueError:
                problems.append(f"the {name} date is written YYYY-MM-DD")
                dates[name] = None
        page = params.get("page", "1")
        return cls(action, params.get("actor", "").strip()[:256], params.get("patient", "").strip()[:128], outcome,
                   dates["since"], dates["until"], int(page) if page.isdigit() and int(page) > 0 else 1), problems

    def period(self, now: datetime) -> tuple[datetime, datetime]:
        """[since, until) within the searchable 12 months: an earlier start is moved up to it."""
        oldest = searchable_since(now)
        since = datetime.combine(self.since, time(), timezone.utc) if self.since else oldest
        until = datetime.combine(self.until + timedelta(days=1), time(), timezone.utc) if self.until \
            else now + timedelta(seconds=1)
        return max(since, oldest), until

    @property
    def filters(self) -> dict:
        return {"patient": self.patient or None, "actor": self.actor or None, "action": self.action or None,
                "succeeded": (self.outcome == "success") if self.outcome else None}

    def link(self, **changes) -> str:
        values = {"action": self.action, "actor": self.actor, "patient": self.patient, "outcome": self.outcome,
                  "since": self.since.isoformat() if self.since else "",
                  "until": self.until.isoformat() if self.until else "", "page": str(self.page)}
        values.update({name: str(value) for name, value in changes.items()})
        return "?" + urlencode({name: value for name, value in values.items()
                                if value and not (name == "page" and value == "1")})

    def described(self, since: datetime, until: datetime, export: str) -> str:
        chosen = ", ".join(f"{name}={value}" for name, value in
                           {"patient": self.patient, "actor": self.actor, "action": self.action,
                            "outcome": self.outcome}.items() if value)
        return f"portal {export} {since:%Y-%m-%dT%H:%M:%SZ}..{until:%Y-%m-%dT%H:%M:%SZ} {chosen}".strip()


def _page(audit: AuditTrail, org: str, since: datetime, until: datetime,
          selection: AuditSelection) -> tuple[int, list[AuditRecord]]:
    """(matches, the records of the selection's page)."""
    records = audit.search(org, since, until, limit=PAGE_SIZE, offset=(selection.page - 1) * PAGE_SIZE,
                           **selection.filters)
    return audit.count(org, since, until, **selection.filters), records


async def audit_page(request: Request) -> Response:
    org = request.path_params["org"]
    audit = request.app.state.services.audit
    selection, problems = AuditSelection.of(request)
    now = datetime.now(timezone.utc)
    since, until = selection.period(now)
    export = "csv" if request.query_params.get("format") == "csv" else "page"
    audit.record(AuditEvent.for_request(requester_of(request), AuditAction.AUDIT_LOG_USED, org=org,
                                        detail=selection.described(since, until, export)))
    await run_in_threadpool(audit.settle)  # what is shown includes what just happened
    if export == "csv":
        records = audit.iterate(org, since, until, **selection.filters)
        return StreamingResponse(iterate_in_threadpool(csv_lines(records)), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition":
                                          f'attachment; filename="oix-audit-{org}-{now:%Y%m%d}.csv"',
                                          "Cache-Control": "no-store"})
    total, records = (0, []) if until <= since else await run_in_threadpool(_page, audit, org, since, until, selection)
    pages = max(1, -(-total // PAGE_SIZE))
    return await render(request, "audit.html", {
        "selection": selection, "problems": problems, "records": records, "total": total, "pages": pages,
        "actions": [action.value for action in AuditAction], "outcomes": OUTCOMES,
        "oldest": searchable_since(now).date().isoformat(), "today": now.date().isoformat(),
        "csv_link": selection.link(format="csv", page=1)}, status=400 if problems else 200, section="audit")


ROUTES = [Route("/orgs/{org}/audit", audit_page, methods=["GET"])]
