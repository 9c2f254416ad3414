"""Patient access (a subject access request): an organisation's admin gives a patient a
time-limited link to the studies it holds of them; through it the patient sees the images and
downloads them as a DICOM File-set (PS3.10, DICOMDIR PS3.3 F). Every use is an audited read."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pydicom
from pydicom.fileset import FileSet

from exchange.access import ActorKind, Principal, Requester
from exchange.archive import Archive
from exchange.audit import AuditAction, AuditEvent, AuditTrail
from exchange.errors import ExchangeError, NotHeld
from exchange.organisations import OrganisationDirectory
from storage.patient_access import PatientAccessTable, PatientStudy
from storage.tables import PatientAccessLink, as_utc, utcnow

DEFAULT_LIFETIME = timedelta(days=7)
MAX_LIFETIME = timedelta(days=30)
LISTED_LINKS = 200
UNLISTED = "OTHER"  # the ZIP folder of objects the DICOMDIR has no record type for (PS3.3 F.5)


class InvalidPatientAccessRequest(ExchangeError):
    pass


class UnknownPatientAccessLink(ExchangeError):
    """No link has that token (or the organisation has no such link): answered 404."""


class PatientAccessLinkGone(ExchangeError):
    """The link existed and has expired or been revoked: answered 410 Gone."""


@dataclass(frozen=True)
class IssuedLink:
    """A link just created: `token` is shown this once and never stored."""

    link: PatientAccessLink
    token: str


@dataclass(frozen=True)
class OpenLink:
    """A link in use: what it opens, and the requester its reads are audited as."""

    link: PatientAccessLink
    requester: Requester

    @property
    def study_uids(self) -> list[str]:
        return self.link.study_uids.split()


def link_state(link: PatientAccessLink) -> str:
    if link.revoked_at is not None:
        return "revoked"
    return "expired" if as_utc(link.expires_at) <= utcnow() else "active"


class PatientAccess:
    def __init__(self, table: PatientAccessTable, archive: Archive, directory: OrganisationDirectory,
                 audit: AuditTrail):
        self.table = table
        self.archive = archive
        self.directory = directory
        self.audit = audit

    # -- an organisation's admin ----------------------------------------------------------------

    def patients(self, requester: Requester, org: str, limit: int = 1000) -> list[str]:
        """Patient IDs held by `org`, for the admin to pick from; a list that names patients is
        audited as a query (PS3.15 A.5.3.10)."""
        self.directory.require(org)
        found = self.table.patient_ids(org, limit)
        self.audit.record(AuditEvent.for_request(requester, AuditAction.QUERY, org=org, patients=tuple(found),
                                                 detail=f"patient access: {len(found)} patient(s) held"))
        return found

    def of_org(self, requester: Requester, org: str) -> list[PatientAccessLink]:
        """The organisation's links, each naming its patient: audited as a query too."""
        self.directory.require(org)
        links = self.table.of_org(org, LISTED_LINKS)
        self.audit.record(AuditEvent.for_request(
            requester, AuditAction.QUERY, org=org, patients=tuple(dict.fromkeys(link.patient_id for link in links)),
            detail=f"patient access: {len(links)} link(s)"))
        return links

    def create(self, requester: Requester, org: str, patient_id: str,
               lifetime: timedelta = DEFAULT_LIFETIME) -> IssuedLink:
        """A link to every study `org` holds of `patient_id` now, for `lifetime` (at most 30 days)."""
        self.directory.require(org)
        patient_id = patient_id.strip()
        if not timedelta(0) < lifetime <= MAX_LIFETIME:
            raise InvalidPatientAccessRequest(f"a patient access link lasts at most {MAX_LIFETIME.days} days")
        study_uids = self.table.study_uids(org, patient_id) if patient_id else []
        if not study_uids:
            raise InvalidPatientAccessRequest(f"{org} holds no studies of patient '{patient_id}'")
        token = secrets.token_urlsafe(32)  # 256 bits: the token is the whole credential
        now = utcnow()
        link = PatientAccessLink(link_id=secrets.token_hex(8), org=org, patient_id=patient_id,
                                 study_uids=" ".join(study_uids), token_sha256=_sha256(token),
                                 created_by=requester.principal.actor, created_at=now, expires_at=now + lifetime)
        self.table.add(link)
        self.audit.record(AuditEvent.for_request(
            requester, AuditAction.SECURITY_CONFIGURATION_CHANGED, org=org, patients=(patient_id,),
            studies=tuple(study_uids),
            detail=f"patient access link {link.link_id} created, expires {link.expires_at:%Y-%m-%d %H:%M} UTC"))
        return IssuedLink(link, token)

    def revoke(self, requester: Requester, org: str, link_id: str) -> PatientAccessLink:
        revoked = self.table.revoke(org, link_id, utcnow())
        if revoked is None:
            raise UnknownPatientAccessLink(f"{org} has no active patient access link '{link_id}'")
        self.audit.record(AuditEvent.for_request(
            requester, AuditAction.SECURITY_CONFIGURATION_CHANGED, org=org, patients=(revoked.patient_id,),
            detail=f"patient access link {link_id} revoked"))
        return revoked

    # -- the patient ----------------------------------------------------------------------------

    def open(self, token: str, client_address: str = "", user_agent: str = "", request_id: str = "") -> OpenLink:
        """The link of `token` if it still works; its reads are audited as the link itself."""
        link = self.table.by_token(_sha256(token))
        if link is None:
            raise UnknownPatientAccessLink("this patient access link is not known here")
        state = link_state(link)
        if state != "active":
            when = as_utc(link.revoked_at or link.expires_at)
            raise PatientAccessLinkGone(f"this link was {state} on {when:%d %B %Y at %H:%M} UTC")
        principal = Principal(f"patient-access-link:{link.link_id}", ActorKind.ANONYMOUS,
                              name=f"patient access link {link.link_id} of {link.org}")
        return OpenLink(link, Requester(principal, client_address, user_agent, request_id))

    def require_study(self, opened: OpenLink, study_uid: str) -> None:
        """A study outside the link is not there, as far as the link's holder can tell."""
        if study_uid not in opened.study_uids:
            raise UnknownPatientAccessLink("this link does not open that study")

    def studies(self, opened: OpenLink) -> list[PatientStudy]:
        """The link's studies still held, with their series; audited as a query (PS3.15 A.5.3.10)."""
        link = opened.link
        found = self.table.studies(link.org, link.patient_id, opened.study_uids)
        self.audit.record(AuditEvent.for_request(
            opened.requester, AuditAction.QUERY, org=link.org, patients=(link.patient_id,),
            studies=tuple(study.study_uid for study in found), detail="patient access page"))
        return found

    def write_file_set(self, opened: OpenLink, directory: Path, archive_path: Path) -> None:
        """A ZIP at `archive_path` of the link's studies as a DICOM File-set: the objects as
        stored and a DICOMDIR (PS3.10 8, PS3.3 F) made by pydicom's FileSet, built in
        `directory`, one object in memory at a time. Each study's read is an audited retrieve."""
        link = opened.link
        file_set = FileSet()
        blobs: dict[str, str] = {}  # SOP Instance UID → blob key
        unlisted: list[tuple[str, str]] = []
        for study_uid in opened.study_uids:
            try:
                held = self.archive.held(link.org, opened.requester, "ZIP download", study_uid)
            except NotHeld:  # deleted, or expired by retention, since the link was made
                continue
            for item in held:
                with self.archive.open_blob(item.blob_key) as handle:
                    # The DICOMDIR's records need the attributes, not the pixels (PS3.3 F.5).
                    dataset = pydicom.dcmread(handle, stop_before_pixels=True)
                _complete_record_keys(dataset, len(blobs) + len(unlisted) + 1)
                try:
                    file_set.add(dataset)
                except ValueError:  # a SOP Class with no directory record type in PS3.3 F.5
                    unlisted.append((item.sop_instance_uid, item.blob_key))
                    continue
                blobs[item.sop_instance_uid] = item.blob_key
        root = directory / "set"
        file_set.write(root)
        with zipfile.ZipFile(archive_path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            archive.write(root / "DICOMDIR", "DICOMDIR")
            for instance in file_set:
                name = Path(instance.path).relative_to(root).as_posix()
                self._copy_blob(archive, blobs[instance.SOPInstanceUID], name)  # as stored, not as re-encoded
            for number, (_sop_instance_uid, blob_key) in enumerate(unlisted, start=1):
                # A PS3.10 8.2 File ID component: at most 8 of A-Z, 0-9 and _.
                self._copy_blob(archive, blob_key, f"{UNLISTED}/O{number:07d}")

    def _copy_blob(self, archive: zipfile.ZipFile, blob_key: str, name: str) -> None:
        with self.archive.open_blob(blob_key) as source, archive.open(name, "w", force_zip64=True) as target:
            shutil.copyfileobj(source, target, 1 << 20)


# The directory records' Type 1 keys that are only Type 2 in the objects (PS3.3 F.5.3-F.5.5 vs
# C.7.2.1, C.7.3.1, C.7.6.1): an empty value would keep the object out of the DICOMDIR, so the
# record (never the file, which goes out as stored) gets a placeholder, as dcmmkdir +I does.
RECORD_PLACEHOLDERS = {"StudyID": "0", "StudyDate": "19000101", "StudyTime": "000000", "SeriesNumber": 0}


def _complete_record_keys(dataset: pydicom.Dataset, number: int) -> None:
    for keyword, placeholder in RECORD_PLACEHOLDERS.items():
        if dataset.get(keyword) in (None, ""):
            setattr(dataset, keyword, placeholder)
    if dataset.get("InstanceNumber") in (None, ""):
        dataset.InstanceNumber = number


def _sha256(text: str) -> str:
    # The token has 256 bits of entropy: a fast hash is enough (as for API keys).
    return hashlib.sha256(text.encode()).hexdigest()
