"""Every audited action of a live server makes exactly the events expected (issue Trust, Audit;
IHE ATNA / DICOM PS3.15 A.5.3 semantics), each naming actor, organisation, patient, study,
outcome, client address, user agent and the request id the response carried; and `oix audit
verify` finds an event edited in the server's own index."""

from __future__ import annotations

import io
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.dicomweb_requests import stow
from tests.servers import OixServer, new_org_slug, oix_command, run_cli, start_server, stop_server

USER_AGENT = "oix-audit-test/1.0"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[OixServer]:
    running = start_server(tmp_path_factory.mktemp("audit") / "data", auth=True)
    try:
        yield running
    finally:
        stop_server(running)


class Organisation:
    """An organisation of the test's own, with an admin key to read its audit trail."""

    def __init__(self, server: OixServer):
        self.server = server
        self.slug = new_org_slug("audited")
        self.env = {"OIX_DATA_DIR": str(server.data_dir), "PATH": "/usr/bin:/bin"}
        server.cli("org", "add", self.slug, "Audited")
        self.admin_key = self.key("admin")
        self.http = httpx.Client(base_url=server.base_url, timeout=60, headers={"User-Agent": USER_AGENT})
        self.events()  # the admin key's first use (an authentication event) is behind us

    def key(self, role: str) -> str:
        return self.server.cli("key", "create", "--org", self.slug, "--role", role).strip()

    def as_(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def events(self, **filters) -> list[dict]:
        response = self.http.get(f"/api/orgs/{self.slug}/audit", params={"limit": 1000, **filters},
                                 headers=self.as_(self.admin_key))
        assert response.status_code == 200, response.text
        return response.json()["events"]

    def events_of(self, response: httpx.Response) -> list[dict]:
        """The events of one request, oldest first, by the request id the response carried."""
        request_id = response.headers["x-request-id"]
        return sorted((event for event in self.events() if event["request_id"] == request_id),
                      key=lambda event: event["sequence"])


@pytest.fixture
def org(server: OixServer) -> Iterator[Organisation]:
    organisation = Organisation(server)
    yield organisation
    organisation.http.close()


def real_instance(patient_id: str, study_uid: str) -> bytes:
    """pydicom's CT_small.dcm as a new instance of `study_uid` for `patient_id`."""
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.PatientID = patient_id
    dataset.StudyInstanceUID = study_uid
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def stored_study(org: Organisation, key: str) -> tuple[str, str, httpx.Response]:
    patient, study = f"P{secrets.token_hex(4)}", generate_uid()
    response = stow(org.http, f"/dicomweb/{org.slug}", [real_instance(patient, study), real_instance(patient, study)],
                    headers=org.as_(key))
    assert response.status_code == 200, response.text
    return patient, study, response


def only(events: list[dict]) -> dict:
    assert len(events) == 1, events
    return events[0]


def test_a_store_is_one_event_per_study_with_patient_study_actor_and_client(org):
    """PS3.15 A.5.3.7 DICOM Instances Transferred, EventActionCode C (created)."""
    key = org.key("sender")
    patient, study, response = stored_study(org, key)
    # The key's first use (buffered) and the store (written with the index) may be chained in
    # either order: the audit trail orders by when events are written, not made.
    authentication, event = sorted(org.events_of(response), key=lambda e: e["action"] != "authenticate")
    assert (authentication["action"], authentication["outcome"]) == ("authenticate", 0)
    assert (event["action"], event["event_id"], event["event_action_code"], event["outcome"]) == \
        ("store", "110104", "C", 0)
    assert event["patients"] == [{"id": patient, "issuer": ""}] and event["studies"] == [study]
    assert event["actor"].startswith("key:") and event["actor_kind"] == "api-key"
    assert (event["org"], event["client_address"], event["user_agent"]) == (org.slug, "127.0.0.1", USER_AGENT)
    assert "2 instance(s) stored" in event["detail"]


def test_a_store_with_a_refused_part_also_records_the_failure(org):
    patient, study = f"P{secrets.token_hex(4)}", generate_uid()
    response = stow(org.http, f"/dicomweb/{org.slug}", [real_instance(patient, study), b"not DICOM at all"],
                    headers=org.as_(org.admin_key))
    assert response.status_code == 202
    events = [(e["action"], e["outcome"]) for e in org.events_of(response)]
    assert events == [("store", 0), ("store", 4)]


def test_a_query_is_one_event_naming_the_patient_asked_for(org):
    """PS3.15 A.5.3.10 Query, with the query itself kept."""
    patient, _study, _ = stored_study(org, org.admin_key)
    response = org.http.get(f"/dicomweb/{org.slug}/studies", params={"PatientID": patient},
                            headers=org.as_(org.admin_key))
    assert response.status_code == 200 and len(response.json()) == 1
    event = only(org.events_of(response))
    assert (event["action"], event["event_id"], event["outcome"]) == ("query", "110112", 0)
    assert event["patients"] == [{"id": patient, "issuer": ""}]
    assert f"PatientID={patient}" in event["detail"]


@pytest.mark.parametrize("what", ["", "/metadata", "/series/{series}/instances/{instance}/frames/1"])
def test_each_retrieve_is_one_event_naming_patient_and_study(org, what):
    """PS3.15 A.5.3.7 DICOM Instances Transferred, EventActionCode R (read)."""
    patient, study, stored = stored_study(org, org.admin_key)
    instance_url = stored.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
    series, instance = instance_url.split("/series/")[1].split("/instances/")
    response = org.http.get(f"/dicomweb/{org.slug}/studies/{study}" + what.format(series=series, instance=instance),
                            headers={**org.as_(org.admin_key), "Accept": "*/*"})
    assert response.status_code == 200, response.text[:200]
    event = only(org.events_of(response))
    assert (event["action"], event["event_action_code"], event["outcome"]) == ("retrieve", "R", 0)
    assert event["patients"] == [{"id": patient, "issuer": ""}] and event["studies"] == [study]


def test_a_retrieve_of_something_not_held_is_a_failed_retrieve(org):
    study = generate_uid()
    response = org.http.get(f"/dicomweb/{org.slug}/studies/{study}", headers=org.as_(org.admin_key))
    assert response.status_code == 404
    event = only(org.events_of(response))
    assert (event["action"], event["outcome"], event["studies"]) == ("retrieve", 4, [study])


def test_a_delete_is_one_study_deleted_event(org):
    """PS3.15 A.5.3.8 DICOM Study Deleted, EventActionCode D."""
    patient, study, _ = stored_study(org, org.admin_key)
    response = org.http.delete(f"/dicomweb/{org.slug}/studies/{study}", headers=org.as_(org.admin_key))
    assert response.status_code in (200, 204)
    event = only(org.events_of(response))
    assert (event["action"], event["event_id"], event["event_action_code"]) == ("delete", "110105", "D")
    assert event["patients"] == [{"id": patient, "issuer": ""}] and event["studies"] == [study]


def test_a_credential_is_audited_when_first_seen_and_every_time_it_is_refused(org):
    """PS3.15 A.5.3.12 User Authentication: success once per credential, every failure."""
    key = org.key("viewer")
    first = org.http.get(f"/dicomweb/{org.slug}/studies", headers=org.as_(key))
    second = org.http.get(f"/dicomweb/{org.slug}/studies", headers=org.as_(key))
    assert sorted(e["action"] for e in org.events_of(first)) == ["authenticate", "query"]
    assert [e["action"] for e in org.events_of(second)] == ["query"]
    refused = org.http.get(f"/dicomweb/{org.slug}/studies", headers=org.as_(key[:-4] + "AAAA"))
    assert refused.status_code == 401
    event = only(org.events_of(refused))
    assert (event["action"], event["outcome"], event["outcome_description"]) == ("authenticate", 4, "unknown-key")


def test_a_refused_permission_is_the_refused_action_with_a_failure_outcome(org):
    key = org.key("viewer")
    org.http.get(f"/dicomweb/{org.slug}/studies", headers=org.as_(key))  # its first use is audited apart
    response = stow(org.http, f"/dicomweb/{org.slug}", [real_instance("P1", generate_uid())], headers=org.as_(key))
    assert response.status_code == 403
    event = only(org.events_of(response))
    assert (event["action"], event["outcome"], event["outcome_description"]) == ("store", 4, "denied")


def test_admin_changes_through_the_api_and_the_cli_are_security_alerts(org):
    """PS3.15 A.5.3.11 Security Alert, typed by CID 403: a key made and revoked through the
    API; an account made and given a role at the command line."""
    created = org.http.post(f"/api/orgs/{org.slug}/keys", json={"role": "sender", "name": "PACS", "expires": "30d"},
                            headers=org.as_(org.admin_key))
    assert created.status_code == 201, created.text
    event = only(org.events_of(created))
    assert (event["action"], event["event_id"]) == ("security-configuration-changed", "110113")
    assert created.json()["key_id"] in event["detail"]
    revoked = org.http.delete(f"/api/orgs/{org.slug}/keys/{created.json()['key_id']}", headers=org.as_(org.admin_key))
    assert revoked.status_code == 204
    assert "revoked" in only(org.events_of(revoked))["detail"]
    username = f"user-{secrets.token_hex(3)}"
    subprocess.run([*oix_command(), "user", "add", username, "--org", org.slug, "--role", "viewer"],
                   input="a long enough password\n", text=True, env=org.env, check=True, timeout=60,
                   capture_output=True)
    changes = [(e["action"], e["actor_kind"]) for e in org.events(actor=f"cli:{_os_user()}")
               if username in e["detail"]]
    assert ("roles-changed", "system") in changes


def test_reading_the_audit_trail_is_itself_audited(org):
    """PS3.15 A.5.3.2 Audit Log Used."""
    response = org.http.get(f"/api/orgs/{org.slug}/audit", headers=org.as_(org.admin_key))
    event = only(org.events_of(response))
    assert (event["action"], event["event_id"], event["event_action_code"]) == ("audit-log-used", "110101", "R")


def test_audit_filters_and_exports(org):
    patient, study, _ = stored_study(org, org.admin_key)
    assert {e["action"] for e in org.events(patient=patient)} == {"store"}
    assert {e["action"] for e in org.events(study=study)} == {"store"}
    assert all(e["action"] == "store" for e in org.events(action="store"))
    csv = org.http.get(f"/api/orgs/{org.slug}/audit", params={"format": "csv", "study": study},
                       headers=org.as_(org.admin_key))
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.strip().splitlines()) == 2 and study in csv.text
    fhir = org.http.get(f"/api/orgs/{org.slug}/audit", params={"format": "fhir", "study": study},
                        headers=org.as_(org.admin_key))
    assert fhir.json()["resourceType"] == "Bundle" and fhir.json()["entry"][0]["resource"]["resourceType"] == "AuditEvent"
    xml = org.http.get(f"/api/orgs/{org.slug}/audit", params={"format": "dicom", "study": study},
                       headers=org.as_(org.admin_key))
    assert b"<AuditMessage" in xml.content and study.encode() in xml.content
    too_old = org.http.get(f"/api/orgs/{org.slug}/audit", params={"since": "2020-01-01"},
                           headers=org.as_(org.admin_key))
    assert too_old.status_code == 400 and "12 months" in too_old.json()["error"]


def test_an_organisation_sees_only_its_own_events(server, org):
    stranger = Organisation(server)
    try:
        _patient, study, _ = stored_study(org, org.admin_key)
        assert stranger.events(study=study) == []
        peek = stranger.http.get(f"/api/orgs/{org.slug}/audit", headers=stranger.as_(stranger.admin_key))
        assert peek.status_code == 403
    finally:
        stranger.http.close()


def test_audit_verify_finds_an_event_edited_in_the_live_index(server, org):
    """issue Trust acceptance 3: tampering with a stored event is detected by `oix audit verify`."""
    stored_study(org, org.admin_key)
    org.events()  # flushes what is buffered
    assert "ok" in run_cli(["audit", "verify"], org.env).stdout
    with sqlite3.connect(server.data_dir / "index.sqlite3") as database:
        table = "auditentry"
        sequence = database.execute(f"SELECT max(sequence) FROM {table} WHERE action = 'store'").fetchone()[0]
        database.execute(f"UPDATE {table} SET actor = 'someone-else' WHERE sequence = ?", (sequence,))
    verified = subprocess.run([*oix_command(), "audit", "verify"], env=org.env, capture_output=True, text=True,
                              timeout=60)
    assert verified.returncode == 1
    assert str(sequence) in verified.stdout + verified.stderr
    with sqlite3.connect(server.data_dir / "index.sqlite3") as database:
        database.execute(f"UPDATE {table} SET actor = ? WHERE sequence = ?",
                         (org.events(action="store")[0]["actor"], sequence))


def _os_user() -> str:
    import getpass

    return getpass.getuser()


def test_a_bearer_token_with_no_provider_configured_is_a_401_that_says_why(org):
    """RFC 6750 3: the challenge's error_description stays printable ASCII whatever the message."""
    refused = org.http.get(f"/dicomweb/{org.slug}/studies", headers={"Authorization": "Bearer eyJhbGciOi.not.a.key"})
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert "OpenID Connect" in refused.json()["error"]
    event = only(org.events_of(refused))
    assert (event["action"], event["outcome"], event["outcome_description"]) == ("authenticate", 4, "no-provider")
