"""`oix conformance check` passes against a live OIX and fails against endpoints that do not
speak DICOMweb: the kit can tell the two apart."""

from __future__ import annotations

import json
import subprocess

from conformance.checks import CHECKS
from conformance.kit import run_checks
from tests.servers import free_port, oix_command

KIT_SECONDS = 120


def check(root: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([*oix_command(), "conformance", "check", root, "--timeout", "10", *flags],
                          capture_output=True, text=True, timeout=KIT_SECONDS)


def test_kit_passes_every_check_against_oix(service_root):
    completed = check(service_root, "--json")
    report = json.loads(completed.stdout)
    not_passed = [c for c in report["checks"] if c["result"] != "PASS"]
    assert not not_passed, json.dumps(not_passed, indent=2)
    assert completed.returncode == 0
    assert [c["name"] for c in report["checks"]] == [c.name for c in CHECKS] + ["delete_study"]


def test_kit_prints_a_table_of_check_section_result_and_detail(service_root):
    completed = check(service_root)
    lines = completed.stdout.splitlines()
    for known in CHECKS:
        row = next(line for line in lines if line.startswith(known.name + " "))
        assert known.section in row and " PASS " in row
    assert completed.returncode == 0, completed.stdout


def test_kit_fails_against_an_endpoint_that_is_not_dicomweb(broken_service_root):
    completed = check(broken_service_root, "--json")
    report = json.loads(completed.stdout)
    results = {c["name"]: c["result"] for c in report["checks"]}
    assert completed.returncode == 1
    assert results["store_study"] == "FAIL"
    assert "FAIL" in {results["retrieve_unknown_study"], results["search_without_match"]}


def test_kit_fails_when_nothing_answers():
    completed = check(f"http://127.0.0.1:{free_port()}/dicomweb/NOBODY")
    assert completed.returncode == 1
    assert "FAIL" in completed.stdout


def test_kit_stops_at_its_request_budget(service_root):
    outcomes, requests = run_checks(service_root, timeout=10, max_requests=3)
    assert requests == 3
    assert any("request budget of 3 used up" in o.detail for o in outcomes)
