"""The audit trail's exports (issue Trust, Audit): CSV a spreadsheet opens safely, FHIR R4
AuditEvent as IHE Basic Audit Log Patterns (BALP) shape them, and DICOM audit messages with the
structure of PS3.15 A.5.1. Rendered from events read back from a real SQLite index."""

from __future__ import annotations

import base64
import csv
import io
import json
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import pytest

from exchange.access import ActorKind
from exchange.audit import AuditAction, AuditEvent, AuditRecord, AuditTrail, Outcome, PatientIdentifier
from exchange.audit_formats import (
    CSV_COLUMNS,
    AuditSource,
    audit_csv,
    dicom_audit_message_xml,
    dicom_audit_messages,
    fhir_audit_event,
    fhir_bundle,
)
from tests.exchange.audit_support import NOW, index_database, open_database, store_event

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SOURCE = AuditSource(source_id="oix.example.nhs.uk", site="OIX national exchange",
                     base_url="https://oix.example.nhs.uk")
STUDIES = ("1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.2")


@pytest.fixture
def records(tmp_path) -> dict[str, AuditRecord]:
    """One event of each shape, written to the trail and read back, by name."""
    events = {
        "store": store_event(1, patients=(PatientIdentifier("9434765919", "2.16.840.1.113883.2.1.4.1"),),
                             studies=STUDIES, transfer="t-7f3a"),
        "login": AuditEvent(action=AuditAction.AUTHENTICATE, actor="asha", actor_kind=ActorKind.USER, org="RJ1",
                            client_address="2001:db8::7", user_agent="Firefox/128", request_id="r-1",
                            detail="portal sign-in", occurred_at=NOW),
        "refused": AuditEvent(action=AuditAction.AUTHENTICATE, actor="anonymous", actor_kind=ActorKind.ANONYMOUS,
                              org=None, outcome=Outcome.MINOR_FAILURE, outcome_description="bad-password",
                              client_address="192.0.2.9", occurred_at=NOW),
        "query": AuditEvent(action=AuditAction.QUERY, actor="pacs-key", actor_kind=ActorKind.API_KEY, org="RJ1",
                            detail="PatientID=9434765919&ModalitiesInStudy=CT", occurred_at=NOW),
        "admin": AuditEvent(action=AuditAction.ROLES_CHANGED, actor="cli:root", actor_kind=ActorKind.SYSTEM,
                            org="RJ1", client_address="localhost", detail="asha given the admin role in RJ1",
                            occurred_at=NOW),
        "audit": AuditEvent(action=AuditAction.AUDIT_LOG_USED, actor="asha", actor_kind=ActorKind.USER, org="RJ1",
                            detail="csv export", occurred_at=NOW),
        "formula": store_event(2, actor="=HYPERLINK(\"http://evil\")", detail="+SUM(A1:A9)",
                               user_agent="@cmd", outcome_description="-2+3",
                               patients=(PatientIdentifier("=1+1", ""), PatientIdentifier("P2", "NHS"))),
        "markup": store_event(3, detail="<AuditMessage> & \"quotes\" \x07bell"),
    }
    with index_database("sqlite", tmp_path / "data") as url, open_database(url) as database:
        trail = AuditTrail(database)
        for event in events.values():
            trail.record(event)
        trail.flush()
        period = (NOW - timedelta(days=1), NOW + timedelta(days=1))
        stored = {record.event: record for org in ("RJ1", None) for record in trail.search(org, *period, limit=100)}
    by_name = {name: stored.get(event) for name, event in events.items()}
    assert all(by_name.values())
    return by_name


# -- CSV ---------------------------------------------------------------------------------------

def test_csv_round_trips_through_a_csv_reader(records):
    ordered = [records["store"], records["login"], records["query"]]
    rows = list(csv.reader(io.StringIO(audit_csv(ordered), newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 4
    store = dict(zip(CSV_COLUMNS, rows[1]))
    event = records["store"].event
    assert store["sequence"] == str(records["store"].sequence) and store["hash"] == records["store"].hash
    assert datetime.fromisoformat(store["occurred_at"]) == event.occurred_at
    assert (store["org"], store["action"], store["event_id"], store["event_action_code"], store["outcome"]) == \
        ("RJ1", "store", "110104", "C", "0")
    assert store["patient_ids"].split("\\") == ["9434765919"]
    assert store["issuers_of_patient_ids"].split("\\") == ["2.16.840.1.113883.2.1.4.1"]
    assert tuple(store["study_uids"].split("\\")) == STUDIES
    assert (store["transfer"], store["client_address"], store["user_agent"], store["detail"]) == \
        ("t-7f3a", "10.1.2.3", "dicomweb-client/0.59", "2 instances")
    login = dict(zip(CSV_COLUMNS, rows[2]))
    assert (login["event_type"], login["actor_kind"]) == ("110122", "user")


def test_csv_neutralises_cells_a_spreadsheet_would_run_as_formulas(records):
    """OWASP CSV injection: cells starting with = + - @ are prefixed with an apostrophe."""
    rows = list(csv.reader(io.StringIO(audit_csv([records["formula"]]), newline="")))
    cells = dict(zip(CSV_COLUMNS, rows[1]))
    assert cells["actor"] == "'=HYPERLINK(\"http://evil\")"
    assert cells["detail"] == "'+SUM(A1:A9)"
    assert cells["user_agent"] == "'@cmd"
    assert cells["outcome_description"] == "'-2+3"
    assert cells["patient_ids"] == "'=1+1\\P2"
    assert not any(cell[:1] in "=+-@" for row in rows for cell in row if cell)


# -- FHIR R4 AuditEvent (BALP) -----------------------------------------------------------------

def coding_of(resource_part: dict) -> tuple[str, str]:
    return resource_part["system"], resource_part["code"]


def test_fhir_audit_event_has_the_balp_elements_for_a_store(records):
    """BALP: type/subtype codes, action, recorded, outcome, the requesting agent with its
    network address, the server agent (Destination Role ID), source with observer and site
    and type 4 (application server), the patient entity by identifier and each study as a
    system object (type 2, role 3) identified by urn:dicom:uid."""
    record = records["store"]
    resource = json.loads(json.dumps(fhir_audit_event(record, SOURCE)))  # plain JSON through and through
    assert resource["resourceType"] == "AuditEvent" and resource["id"] == str(record.sequence)
    assert resource["type"] == {"system": DCM, "code": "110104", "display": "DICOM Instances Transferred"}
    assert "subtype" not in resource
    assert resource["action"] == "C" and resource["outcome"] == "0"
    assert datetime.fromisoformat(resource["recorded"]) == record.event.occurred_at
    assert resource["recorded"].endswith("+00:00")

    requestor, organisation, server = resource["agent"]
    assert requestor["requestor"] is True
    assert [coding_of(c) for c in requestor["type"]["coding"]] == [
        (DCM, "110153"), ("http://terminology.hl7.org/CodeSystem/extra-security-role-type", "humanuser")]
    assert requestor["who"]["identifier"]["value"] == "asha"
    assert requestor["network"] == {"address": "10.1.2.3", "type": "2"}
    assert organisation == {"who": {"identifier": {"value": "RJ1", "system": "https://oix.example.nhs.uk/api/orgs"},
                                    "type": "Organization", "display": "RJ1"}, "requestor": False}
    assert server["requestor"] is False and coding_of(server["type"]["coding"][0]) == (DCM, "110152")
    assert server["who"]["identifier"]["value"] == "oix.example.nhs.uk"
    assert server["network"] == {"address": "https://oix.example.nhs.uk", "type": "5"}

    assert resource["source"]["site"] == "OIX national exchange"
    assert resource["source"]["observer"]["identifier"]["value"] == "oix.example.nhs.uk"
    assert coding_of(resource["source"]["type"][0]) == \
        ("http://terminology.hl7.org/CodeSystem/security-source-type", "4")

    patient, *studies, transfer = resource["entity"]
    assert patient["what"]["identifier"] == {"value": "9434765919", "system": "urn:oid:2.16.840.1.113883.2.1.4.1"}
    assert coding_of(patient["type"]) == ("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1")
    assert coding_of(patient["role"]) == ("http://terminology.hl7.org/CodeSystem/object-role", "1")
    assert [study["what"]["identifier"] for study in studies] == [
        {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"} for uid in STUDIES]
    assert {(coding_of(s["type"])[1], coding_of(s["role"])[1], s["description"]) for s in studies} == \
        {("2", "3", "2 instances")}
    assert transfer["what"]["identifier"]["value"] == "t-7f3a"


def test_fhir_login_has_the_user_authentication_type_and_login_subtype(records):
    """PS3.15 A.5.3.12 as BALP maps it: type DCM 110114, subtype DCM 110122 Login."""
    resource = fhir_audit_event(records["login"], SOURCE)
    assert coding_of(resource["type"]) == (DCM, "110114")
    assert [coding_of(s) for s in resource["subtype"]] == [(DCM, "110122")]
    assert resource["action"] == "E"
    assert resource["agent"][0]["network"] == {"address": "2001:db8::7", "type": "2"}
    refused = fhir_audit_event(records["refused"], SOURCE)
    assert refused["outcome"] == "4" and refused["outcomeDesc"] == "bad-password"
    assert [agent["requestor"] for agent in refused["agent"]] == [True, False]  # no organisation agent


def test_fhir_query_carries_the_query_as_balp_does(records):
    """BALP Query: an entity of type 2 (system object), role 24 (query), the query in base64."""
    resource = fhir_audit_event(records["query"], SOURCE)
    assert (coding_of(resource["type"]), resource["action"]) == ((DCM, "110112"), "E")
    [query] = resource["entity"]
    assert (query["type"]["code"], query["role"]["code"]) == ("2", "24")
    assert base64.b64decode(query["query"]).decode() == "PatientID=9434765919&ModalitiesInStudy=CT"
    assert [c["code"] for c in resource["agent"][0]["type"]["coding"]] == ["110153", "110150"]


def test_fhir_admin_change_and_audit_log_use(records):
    admin = fhir_audit_event(records["admin"], SOURCE)
    assert (coding_of(admin["type"]), [coding_of(s) for s in admin["subtype"]]) == \
        ((DCM, "110113"), [(DCM, "110136")])
    [subject] = admin["entity"]
    assert (subject["role"]["code"], subject["description"]) == ("13", "asha given the admin role in RJ1")
    assert admin["agent"][0]["network"] == {"address": "localhost", "type": "1"}
    used = fhir_audit_event(records["audit"], SOURCE)
    assert (coding_of(used["type"]), used["action"]) == ((DCM, "110101"), "R")
    [log] = used["entity"]
    assert log["what"]["identifier"]["value"] == "https://oix.example.nhs.uk/api/orgs/RJ1/audit"
    assert log["role"]["code"] == "13"


def test_fhir_bundle_is_a_searchset_or_a_collection(records):
    chosen = [records["store"], records["query"]]
    searchset = fhir_bundle(chosen, SOURCE, total=12)
    assert (searchset["resourceType"], searchset["type"], searchset["total"]) == ("Bundle", "searchset", 12)
    assert [entry["resource"]["id"] for entry in searchset["entry"]] == [str(r.sequence) for r in chosen]
    assert all(entry["search"] == {"mode": "match"} and entry["fullUrl"].startswith("urn:uuid:")
               for entry in searchset["entry"])
    assert len({entry["fullUrl"] for entry in searchset["entry"]}) == 2
    collection = fhir_bundle(chosen, SOURCE, bundle_type="collection")
    assert collection["type"] == "collection" and "total" not in collection
    assert all("search" not in entry for entry in collection["entry"])
    with pytest.raises(ValueError):
        fhir_bundle(chosen, SOURCE, bundle_type="transaction")


# -- DICOM audit messages (PS3.15 A.5.1) -------------------------------------------------------

def coded(element: ET.Element) -> tuple[str, str, str]:
    return element.get("csd-code"), element.get("codeSystemName"), element.get("originalText")


def test_dicom_audit_message_has_the_ps3_15_structure(records):
    """PS3.15 A.5.1: EventIdentification (EventID as csd-code/codeSystemName/originalText),
    ActiveParticipants (UserID, UserIsRequestor, NetworkAccessPoint), AuditSourceIdentification,
    and ParticipantObjectIdentification for the patient (type 1, role 1, RFC-3881 code 2) and
    each study (type 2, role 3, DCM 110180), in the order of the schema."""
    record = records["store"]
    message = ET.fromstring(dicom_audit_message_xml(record, SOURCE))
    assert message.tag == "AuditMessage"
    tags = [child.tag for child in message]
    assert tags == ["EventIdentification", "ActiveParticipant", "ActiveParticipant", "ActiveParticipant",
                    "AuditSourceIdentification", "ParticipantObjectIdentification",
                    "ParticipantObjectIdentification", "ParticipantObjectIdentification"]

    identification = message.find("EventIdentification")
    assert identification.get("EventActionCode") == "C" and identification.get("EventOutcomeIndicator") == "0"
    assert datetime.fromisoformat(identification.get("EventDateTime")) == record.event.occurred_at
    assert coded(identification.find("EventID")) == ("110104", "DCM", "DICOM Instances Transferred")
    assert identification.find("EventTypeCode") is None

    requestor, organisation, server = message.findall("ActiveParticipant")
    assert (requestor.get("UserID"), requestor.get("UserIsRequestor"), requestor.get("NetworkAccessPointID"),
            requestor.get("NetworkAccessPointTypeCode")) == ("asha", "true", "10.1.2.3", "2")
    assert coded(requestor.find("RoleIDCode")) == ("110153", "DCM", "Source Role ID")
    assert (organisation.get("UserID"), organisation.get("UserIsRequestor")) == ("RJ1", "false")
    assert (server.get("UserID"), server.get("UserIsRequestor"), server.get("NetworkAccessPointID"),
            server.get("NetworkAccessPointTypeCode")) == ("oix.example.nhs.uk", "false", "oix.example.nhs.uk", "1")
    assert [coded(role)[0] for role in server.findall("RoleIDCode")] == ["110152", "110150"]

    source = message.find("AuditSourceIdentification")
    assert (source.get("AuditSourceID"), source.get("AuditEnterpriseSiteID")) == \
        ("oix.example.nhs.uk", "OIX national exchange")
    assert source.find("AuditSourceTypeCode").get("csd-code") == "4"

    patient, *studies = message.findall("ParticipantObjectIdentification")
    assert (patient.get("ParticipantObjectID"), patient.get("ParticipantObjectTypeCode"),
            patient.get("ParticipantObjectTypeCodeRole")) == ("9434765919^^^&2.16.840.1.113883.2.1.4.1&ISO", "1", "1")
    assert coded(patient.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881", "Patient Number")
    assert [(s.get("ParticipantObjectID"), s.get("ParticipantObjectTypeCode"), s.get("ParticipantObjectTypeCodeRole"))
            for s in studies] == [(uid, "2", "3") for uid in STUDIES]
    assert all(coded(s.find("ParticipantObjectIDTypeCode")) == ("110180", "DCM", "Study Instance UID")
               for s in studies)
    assert [s.findtext("ParticipantObjectDescription") for s in studies] == ["2 instances", "2 instances"]


def test_dicom_login_query_and_admin_messages(records):
    login = ET.fromstring(dicom_audit_message_xml(records["login"], SOURCE)).find("EventIdentification")
    assert coded(login.find("EventID"))[0] == "110114" and coded(login.find("EventTypeCode")) == \
        ("110122", "DCM", "Login")
    assert login.findtext("EventOutcomeDescription") == "portal sign-in"  # no object to describe
    refused = ET.fromstring(dicom_audit_message_xml(records["refused"], SOURCE))
    assert refused.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert refused.find("EventIdentification").findtext("EventOutcomeDescription") == "bad-password"
    assert len(refused.findall("ActiveParticipant")) == 2

    query = ET.fromstring(dicom_audit_message_xml(records["query"], SOURCE))
    [queried] = query.findall("ParticipantObjectIdentification")
    assert coded(queried.find("ParticipantObjectIDTypeCode"))[0] == "110181"  # A.5.3.10: SOP Class UID
    assert base64.b64decode(queried.findtext("ParticipantObjectQuery")).decode() == \
        "PatientID=9434765919&ModalitiesInStudy=CT"

    admin = ET.fromstring(dicom_audit_message_xml(records["admin"], SOURCE))
    assert coded(admin.find("EventIdentification/EventTypeCode"))[0] == "110136"
    detail = admin.find("ParticipantObjectIdentification/ParticipantObjectDetail")
    assert detail.get("type") == "Alert Description"
    assert base64.b64decode(detail.get("value")).decode() == "asha given the admin role in RJ1"


def test_dicom_messages_escape_markup_and_parse_as_one_document(records):
    chosen = [records["store"], records["markup"], records["formula"]]
    root = ET.fromstring(dicom_audit_messages(chosen, SOURCE))
    assert root.tag == "AuditMessages" and [child.tag for child in root] == ["AuditMessage"] * 3
    descriptions = root[1].findall("ParticipantObjectIdentification/ParticipantObjectDescription")
    assert descriptions[0].text == "<AuditMessage> & \"quotes\" bell"
    assert root[2].find("ActiveParticipant").get("UserID") == "=HYPERLINK(\"http://evil\")"
