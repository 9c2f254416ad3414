"""The audit trail rendered three ways: CSV for a spreadsheet, FHIR R4 AuditEvent following IHE
Basic Audit Log Patterns (BALP), and DICOM audit messages (PS3.15 A.5.1).

Where the free-text `detail` goes: a QUERY's detail is its query (FHIR entity.query, DICOM
ParticipantObjectQuery); a Security Alert's is the alert description; other events carry it
as the description of the objects they name (FHIR entity.description, DICOM
ParticipantObjectDescription), or, naming none, in the DICOM EventOutcomeDescription."""

from __future__ import annotations

import base64
import csv
import io
import ipaddress
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from exchange.access import ActorKind
from exchange.audit import DCM, AuditAction, AuditEvent, AuditRecord, Code, PatientIdentifier

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
FHIR_MEDIA_TYPE = "application/fhir+json"
XML_MEDIA_TYPE = "application/xml"

# FHIR R4 code systems (terminology.hl7.org) and the DICOM one.
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SECURITY_ROLE_TYPE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"

# PS3.15 A.5.1 / RFC 3881 code values.
PERSON, SYSTEM_OBJECT = "1", "2"  # ParticipantObjectTypeCode
PATIENT_ROLE, REPORT_ROLE, SECURITY_RESOURCE_ROLE, QUERY_ROLE, JOB_ROLE = "1", "3", "13", "24", "20"
MACHINE_NAME, IP_ADDRESS, URI = "1", "2", "5"  # NetworkAccessPointTypeCode, FHIR agent.network.type
APPLICATION_SERVER = "4"  # AuditSourceTypeCode / FHIR security-source-type
USER_TYPE = {ActorKind.USER: "1", ActorKind.API_KEY: "2", ActorKind.SYSTEM: "2", ActorKind.ANONYMOUS: "1"}
PATIENT_NUMBER = Code("2", "Patient Number", "RFC-3881")
URI_ID_TYPE = Code("12", "URI", "RFC-3881")
QIDO_SOP_CLASS = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND

SECURITY_ALERTS = frozenset(action for action in AuditAction if action.event_id == DCM.SECURITY_ALERT)
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


@dataclass(frozen=True)
class AuditSource:
    """This server as the observer of the events: its id (AuditSourceID, FHIR source.observer),
    the enterprise site (AuditEnterpriseSiteID, source.site) and its base URL (the network
    address of the server's own agent, and where the audit log is)."""

    source_id: str = "oix"
    site: str = ""
    base_url: str = ""

    def organisation_uri(self, org: str | None) -> str:
        return f"{self.base_url.rstrip('/')}/api/orgs/{org}" if org else f"{self.base_url.rstrip('/')}/"

    def audit_log_uri(self, org: str | None) -> str:
        return f"{self.organisation_uri(org)}/audit" if org else self.organisation_uri(None)


class DetailHome(Enum):
    """Where an event's free-text detail is rendered (see the module docstring)."""

    NONE = "none"
    QUERY = "query"
    AUDIT_LOG = "audit log"
    ALERT = "alert"
    STUDIES = "studies"
    EVENT = "event"


def detail_home(event: AuditEvent) -> DetailHome:
    if not event.detail:
        return DetailHome.NONE
    if event.action is AuditAction.QUERY:
        return DetailHome.QUERY
    if event.action is AuditAction.AUDIT_LOG_USED:
        return DetailHome.AUDIT_LOG
    if event.action in SECURITY_ALERTS:
        return DetailHome.ALERT
    return DetailHome.STUDIES if event.studies else DetailHome.EVENT


# -- CSV --------------------------------------------------------------------------------------

CSV_COLUMNS = ("sequence", "occurred_at", "org", "action", "event_id", "event_action_code", "event_type",
               "outcome", "outcome_description", "actor", "actor_kind", "patient_ids", "issuers_of_patient_ids",
               "study_uids", "transfer", "client_address", "user_agent", "request_id", "detail", "hash")
# Multiple values are joined with a backslash, DICOM's own value delimiter: PS3.5 6.2 keeps it
# out of LO and UI values, so the joined cell splits back exactly.
MULTIPLE = "\\"


def csv_lines(records: Iterable[AuditRecord]) -> Iterator[str]:
    """The header line, then one line per event (RFC 4180), for streaming."""
    yield _csv_line(CSV_COLUMNS)
    for record in records:
        event = record.event
        yield _csv_line((
            str(record.sequence), event.occurred_at.isoformat(timespec="microseconds"), event.org or "",
            event.action.value, event.action.event_id.value, event.action.action_code.value,
            event.action.event_type.value if event.action.event_type else "", str(int(event.outcome)),
            event.outcome_description, event.actor, event.actor_kind.value,
            MULTIPLE.join(patient.id for patient in event.patients),
            MULTIPLE.join(patient.issuer for patient in event.patients), MULTIPLE.join(event.studies),
            event.transfer or "", event.client_address, event.user_agent, event.request_id, event.detail, record.hash))


def audit_csv(records: Iterable[AuditRecord]) -> str:
    return "".join(csv_lines(records))


def _csv_line(cells: Iterable[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([_inert(cell) for cell in cells])
    return out.getvalue()


def _inert(cell: str) -> str:
    """OWASP CSV injection: a spreadsheet runs a cell starting with = + - @ (or a tab or
    carriage return before one) as a formula; a leading apostrophe makes it text."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


# -- FHIR R4 AuditEvent (IHE BALP) ------------------------------------------------------------

def fhir_bundle(records: Iterable[AuditRecord], source: AuditSource, bundle_type: str = "searchset",
                total: int | None = None) -> dict:
    """A Bundle (searchset or collection) of AuditEvent resources."""
    if bundle_type not in ("searchset", "collection"):
        raise ValueError(f"bundle type {bundle_type!r}: searchset or collection")
    entries = []
    for record in records:
        entry = {"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, record.hash)}",
                 "resource": fhir_audit_event(record, source)}
        if bundle_type == "searchset":
            entry["search"] = {"mode": "match"}
        entries.append(entry)
    bundle = {"resourceType": "Bundle", "type": bundle_type}
    if bundle_type == "searchset":
        bundle["total"] = len(entries) if total is None else total
    bundle["entry"] = entries
    return bundle


def fhir_audit_event(record: AuditRecord, source: AuditSource) -> dict:
    """One event as a FHIR R4 AuditEvent shaped as BALP shapes them: the DICOM EventID as
    `type` and EventTypeCode as `subtype`; the requesting actor (client side, DICOM Source
    Role ID, requestor) and this server (Destination Role ID) as agents (BALP: the client is
    the source, the server the destination, whichever way the data flows)."""
    event = record.event
    action = event.action
    resource: dict = {"resourceType": "AuditEvent", "id": str(record.sequence), "type": _coding(action.event_id)}
    if action.event_type is not None:
        resource["subtype"] = [_coding(action.event_type)]
    resource["action"] = action.action_code.value
    resource["recorded"] = event.occurred_at.isoformat(timespec="microseconds")
    resource["outcome"] = str(int(event.outcome))
    if event.outcome_description:
        resource["outcomeDesc"] = event.outcome_description
    resource["agent"] = _fhir_agents(record, source)
    resource["source"] = _fhir_source(source)
    entities = _fhir_entities(record, source)
    if entities:
        resource["entity"] = entities
    return resource


def _fhir_agents(record: AuditRecord, source: AuditSource) -> list[dict]:
    event = record.event
    kind = [_coding(DCM.SOURCE_ROLE_ID)]
    if event.actor_kind is ActorKind.USER:
        kind.append({"system": SECURITY_ROLE_TYPE, "code": "humanuser", "display": "human user"})
    elif event.actor_kind in (ActorKind.API_KEY, ActorKind.SYSTEM):
        kind.append(_coding(DCM.APPLICATION))
    requestor: dict = {"type": {"coding": kind},
                       "who": {"identifier": {"value": event.actor}, "display": event.actor},
                       "requestor": True}
    if event.client_address:
        requestor["network"] = {"address": event.client_address, "type": _address_type(event.client_address)}
    agents = [requestor]
    if event.org:
        # The organisation the actor acts for (an agent, not a requestor: FHIR R4 has no other place).
        organisation = {"identifier": {"value": event.org}, "type": "Organization", "display": event.org}
        if source.base_url:
            organisation["identifier"]["system"] = f"{source.base_url.rstrip('/')}/api/orgs"
        agents.append({"who": organisation, "requestor": False})
    server: dict = {"type": {"coding": [_coding(DCM.DESTINATION_ROLE_ID)]},
                    "who": {"identifier": {"value": source.source_id}, "display": source.source_id},
                    "requestor": False}
    if source.base_url:
        server["network"] = {"address": source.base_url, "type": URI}
    agents.append(server)
    return agents


def _fhir_source(source: AuditSource) -> dict:
    observed: dict = {}
    if source.site:
        observed["site"] = source.site
    observed["observer"] = {"identifier": {"value": source.source_id}, "display": source.source_id}
    observed["type"] = [{"system": SOURCE_TYPE, "code": APPLICATION_SERVER, "display": "Application Server"}]
    return observed


def _fhir_entities(record: AuditRecord, source: AuditSource) -> list[dict]:
    event = record.event
    entities = []
    for patient in event.patients:
        entities.append({"what": {"type": "Patient", "identifier": _fhir_patient_identifier(patient)},
                         "type": _entity_type(PERSON), "role": _role(PATIENT_ROLE)})
    home = detail_home(event)
    for study_uid in event.studies:
        # The identifier of an ImagingStudy: system urn:dicom:uid, value urn:oid:<uid>.
        study = {"what": {"type": "ImagingStudy",
                          "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}},
                 "type": _entity_type(SYSTEM_OBJECT), "role": _role(REPORT_ROLE)}
        if home is DetailHome.STUDIES:
            study["description"] = event.detail
        entities.append(study)
    if event.transfer:
        entities.append({"what": {"identifier": {"value": event.transfer}, "display": f"transfer {event.transfer}"},
                         "type": _entity_type(SYSTEM_OBJECT), "role": _role(JOB_ROLE)})
    if event.action is AuditAction.AUDIT_LOG_USED:
        log = {"what": {"identifier": {"value": source.audit_log_uri(event.org)}, "display": "Security Audit Log"},
               "type": _entity_type(SYSTEM_OBJECT), "role": _role(SECURITY_RESOURCE_ROLE)}
        if home is DetailHome.AUDIT_LOG:
            log["description"] = event.detail
        entities.append(log)
    if home is DetailHome.QUERY:
        # BALP Query: the query itself, base64, on an entity of role 24 (Query).
        entities.append({"type": _entity_type(SYSTEM_OBJECT), "role": _role(QUERY_ROLE),
                         "query": base64.b64encode(event.detail.encode()).decode()})
    elif home is DetailHome.ALERT:
        entities.append({"what": {"identifier": {"value": source.organisation_uri(event.org)}},
                         "type": _entity_type(SYSTEM_OBJECT), "role": _role(SECURITY_RESOURCE_ROLE),
                         "description": event.detail})
    elif home is DetailHome.EVENT:
        entities.append({"type": _entity_type(SYSTEM_OBJECT), "description": event.detail})
    return entities


def _fhir_patient_identifier(patient: PatientIdentifier) -> dict:
    identifier: dict = {"value": patient.id}
    if _OID.match(patient.issuer):
        identifier["system"] = f"urn:oid:{patient.issuer}"
    elif patient.issuer:
        identifier["assigner"] = {"display": patient.issuer}
    return identifier


def _coding(code: Code) -> dict:
    return {"system": DCM_SYSTEM, "code": code.value, "display": code.meaning}


def _entity_type(code: str) -> dict:
    return {"system": ENTITY_TYPE, "code": code, "display": {PERSON: "Person", SYSTEM_OBJECT: "System Object"}[code]}


def _role(code: str) -> dict:
    display = {PATIENT_ROLE: "Patient", REPORT_ROLE: "Report", SECURITY_RESOURCE_ROLE: "Security Resource",
               QUERY_ROLE: "Query", JOB_ROLE: "Job"}[code]
    return {"system": OBJECT_ROLE, "code": code, "display": display}


def _address_type(address: str) -> str:
    try:
        ipaddress.ip_address(address)
        return IP_ADDRESS
    except ValueError:
        return MACHINE_NAME


# -- DICOM audit messages (PS3.15 A.5.1) ------------------------------------------------------

def dicom_audit_messages(records: Iterable[AuditRecord], source: AuditSource) -> bytes:
    """Many events as one XML document: an <AuditMessages> element around one PS3.15 A.5.1
    <AuditMessage> per event (the standard defines the message, not a collection of them)."""
    root = ET.Element("AuditMessages")
    for record in records:
        root.append(dicom_audit_message(record, source))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def dicom_audit_message_xml(record: AuditRecord, source: AuditSource) -> bytes:
    return ET.tostring(dicom_audit_message(record, source), encoding="utf-8", xml_declaration=True)


def dicom_audit_message(record: AuditRecord, source: AuditSource) -> ET.Element:
    event = record.event
    action = event.action
    message = ET.Element("AuditMessage")
    identification = ET.SubElement(message, "EventIdentification", {
        "EventActionCode": action.action_code.value,
        "EventDateTime": event.occurred_at.isoformat(timespec="microseconds"),
        "EventOutcomeIndicator": str(int(event.outcome)),
    })
    _coded(identification, "EventID", action.event_id)
    if action.event_type is not None:
        _coded(identification, "EventTypeCode", action.event_type)
    unplaced = event.detail if detail_home(event) is DetailHome.EVENT else ""
    description = "; ".join(text for text in (event.outcome_description, unplaced) if text)
    if description:
        ET.SubElement(identification, "EventOutcomeDescription").text = description

    requestor = ET.SubElement(message, "ActiveParticipant", {
        "UserID": event.actor, "UserIsRequestor": "true", "UserTypeCode": USER_TYPE[event.actor_kind]})
    if event.client_address:
        requestor.set("NetworkAccessPointID", event.client_address)
        requestor.set("NetworkAccessPointTypeCode", _address_type(event.client_address))
    _coded(requestor, "RoleIDCode", DCM.SOURCE_ROLE_ID)
    if event.org:
        ET.SubElement(message, "ActiveParticipant", {"UserID": event.org, "UserIsRequestor": "false",
                                                     "UserTypeCode": "3"})  # 3 = organisation
    server = ET.SubElement(message, "ActiveParticipant", {"UserID": source.source_id, "UserIsRequestor": "false",
                                                          "UserTypeCode": "2"})
    host = urlsplit(source.base_url).hostname if source.base_url else None
    if host:
        server.set("NetworkAccessPointID", host)
        server.set("NetworkAccessPointTypeCode", _address_type(host))
    _coded(server, "RoleIDCode", DCM.DESTINATION_ROLE_ID)
    _coded(server, "RoleIDCode", DCM.APPLICATION)

    audit_source = ET.SubElement(message, "AuditSourceIdentification", {"AuditSourceID": source.source_id})
    if source.site:
        audit_source.set("AuditEnterpriseSiteID", source.site)
    _coded(audit_source, "AuditSourceTypeCode",
           Code(APPLICATION_SERVER, "Application Server Process Tier in Multi-tier System"))
    message.extend(_participant_objects(record, source))
    return message


def _participant_objects(record: AuditRecord, source: AuditSource) -> list[ET.Element]:
    event = record.event
    objects = []
    for patient in event.patients:
        # PS3.15 A.5.3: the patient is type 1 (person), role 1 (patient), ID type RFC-3881 2.
        patient_object = _participant_object(_cx(patient), PERSON, PATIENT_ROLE, PATIENT_NUMBER)
        objects.append(patient_object)
    home = detail_home(event)
    for study_uid in event.studies:
        # Each study: type 2 (system object), role 3 (report), ID type DCM 110180.
        study = _participant_object(study_uid, SYSTEM_OBJECT, REPORT_ROLE, DCM.STUDY_INSTANCE_UID)
        if home is DetailHome.STUDIES:
            ET.SubElement(study, "ParticipantObjectDescription").text = event.detail
        objects.append(study)
    if home is DetailHome.QUERY:
        # PS3.15 A.5.3.10: the SOP class queried (QIDO-RS: Study Root FIND) and the query.
        query = _participant_object(QIDO_SOP_CLASS, SYSTEM_OBJECT, REPORT_ROLE, DCM.SOP_CLASS_UID)
        ET.SubElement(query, "ParticipantObjectQuery").text = base64.b64encode(event.detail.encode()).decode()
        objects.append(query)
    elif event.action is AuditAction.AUDIT_LOG_USED:
        # PS3.15 A.5.3.2: the audit log, type 2, role 13 (security resource), ID type URI.
        audit_log = _participant_object(source.audit_log_uri(event.org), SYSTEM_OBJECT, SECURITY_RESOURCE_ROLE,
                                        URI_ID_TYPE)
        ET.SubElement(audit_log, "ParticipantObjectName").text = "Security Audit Log"
        if home is DetailHome.AUDIT_LOG:
            ET.SubElement(audit_log, "ParticipantObjectDescription").text = event.detail
        objects.append(audit_log)
    elif home is DetailHome.ALERT:
        # PS3.15 A.5.3.11: the alert subject, with the alert description.
        subject = _participant_object(source.organisation_uri(event.org), SYSTEM_OBJECT, SECURITY_RESOURCE_ROLE,
                                      URI_ID_TYPE)
        ET.SubElement(subject, "ParticipantObjectDetail", {
            "type": "Alert Description", "value": base64.b64encode(event.detail.encode()).decode()})
        objects.append(subject)
    return objects


def _participant_object(identifier: str, type_code: str, role: str, id_type: Code) -> ET.Element:
    element = ET.Element("ParticipantObjectIdentification", {
        "ParticipantObjectID": identifier, "ParticipantObjectTypeCode": type_code,
        "ParticipantObjectTypeCodeRole": role})
    _coded(element, "ParticipantObjectIDTypeCode", id_type)
    return element


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    # PS3.15 A.5.1 CodedValueType: csd-code, codeSystemName, originalText (the code meaning).
    return ET.SubElement(parent, tag, {"csd-code": code.value, "codeSystemName": code.scheme,
                                       "originalText": code.meaning})


def _cx(patient: PatientIdentifier) -> str:
    """Patient ID with its issuer in HL7 v2 CX form, as IHE ATNA messages carry it."""
    if not patient.issuer:
        return patient.id
    if _OID.match(patient.issuer):
        return f"{patient.id}^^^&{patient.issuer}&ISO"
    return f"{patient.id}^^^{patient.issuer}"
