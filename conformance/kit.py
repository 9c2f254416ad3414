"""The conformance kit: checks any DICOMweb service root against PS3.18 by storing a fresh
synthetic study, searching for it and retrieving it, then deleting it where the server allows.
`oix conformance check URL` prints one line per check and exits 0 only if none failed."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import httpx
import orjson

from conformance.checks import CHECKS, CLEAN_UP, Check
from conformance.session import MAX_REQUESTS, CheckFailed, CheckSkipped, KitStudy, Session


@dataclass(frozen=True)
class Outcome:
    name: str
    section: str
    result: str  # PASS, FAIL or SKIP
    detail: str


def run_checks(root: str, timeout: float, max_requests: int = MAX_REQUESTS,
               token: str | None = None) -> tuple[list[Outcome], int]:
    """Every check against `root`, then the clean-up; the outcomes and the requests made.
    `token` goes in every request as `Authorization: Bearer` (RFC 6750)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(timeout=timeout, follow_redirects=False, headers=headers) as client:
        session = Session(root.rstrip("/"), client, KitStudy.fresh(), max_requests)
        outcomes = [_outcome(check, session) for check in CHECKS]
        outcomes.append(_outcome(CLEAN_UP, session))
    return outcomes, session.requests


def _outcome(check: Check, session: Session) -> Outcome:
    try:
        return Outcome(check.name, check.section, "PASS", check.run(session))
    except CheckSkipped as exc:
        return Outcome(check.name, check.section, "SKIP", str(exc))
    except CheckFailed as exc:
        return Outcome(check.name, check.section, "FAIL", str(exc))
    except Exception as exc:  # a broken server may send anything; that is a failure, not a crash
        return Outcome(check.name, check.section, "FAIL", f"{type(exc).__name__}: {exc}"[:300])


def render_table(root: str, outcomes: list[Outcome], requests: int) -> str:
    width = max(len(o.name) for o in outcomes)
    lines = [f"DICOMweb conformance check of {root}", "",
             f"{'check':<{width}}  {'PS3.18':<13}  {'result':<6}  detail"]
    lines += [f"{o.name:<{width}}  {o.section:<13}  {o.result:<6}  {o.detail}" for o in outcomes]
    lines += ["", _summary(outcomes, requests)]
    return "\n".join(lines)


def _summary(outcomes: list[Outcome], requests: int) -> str:
    count = {result: sum(o.result == result for o in outcomes) for result in ("PASS", "FAIL", "SKIP")}
    return f"{count['PASS']} passed, {count['FAIL']} failed, {count['SKIP']} skipped ({requests} requests)"


def main(url: str, timeout: float = 30.0, as_json: bool = False, token: str | None = None) -> int:
    """`oix conformance check URL`: 0 when no check failed, 1 otherwise."""
    outcomes, requests = run_checks(url, timeout, token=token)
    if as_json:
        print(orjson.dumps({
            "root": url,
            "requests": requests,
            "checks": [asdict(o) for o in outcomes],
        }, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_table(url, outcomes, requests))
    sys.stdout.flush()
    return 1 if any(o.result == "FAIL" for o in outcomes) else 0
