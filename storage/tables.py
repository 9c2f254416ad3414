"""The metadata index: one set of SQLModel tables for SQLite and PostgreSQL. Every row of
patient data carries its organisation, and every lookup starts from it (DESIGN invariant 2)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, Integer, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """A time read back from the index: SQLite returns it without its zone, and it is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Organisation(SQLModel, table=True):
    slug: str = Field(primary_key=True, max_length=64)  # the short code, e.g. an ODS code
    name: str
    kind: str = Field(default="trust", max_length=32)  # trust, private, teleradiology, research
    contact: str = ""
    retention_days: int = 30  # how long received copies are kept unless retained
    identity_domain: str = ""  # Issuer of Patient ID (0010,0021) of its local MRNs
    created_at: datetime = Field(default_factory=utcnow)


class Study(SQLModel, table=True):
    """Study-level query attributes (PS3.18 Table 10.6.3-3), as first stored."""

    __table_args__ = (
        UniqueConstraint("org", "study_uid"),
        Index("ix_study_org_date", "org", "study_date"),
        Index("ix_study_org_patient_id", "org", "patient_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    org: str = Field(foreign_key="organisation.slug", max_length=64)
    study_uid: str
    patient_name: str = ""
    patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    referring_physician_name: str = ""
    study_description: str = ""
    attributes: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Series(SQLModel, table=True):
    """Series-level query attributes (PS3.18 Table 10.6.3-4)."""

    __table_args__ = (
        UniqueConstraint("org", "study_uid", "series_uid"),
        Index("ix_series_org_modality", "org", "modality"),
    )
    id: int | None = Field(default=None, primary_key=True)
    org: str = Field(max_length=64)
    study_uid: str
    series_uid: str
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    performed_procedure_step_start_date: str = ""
    performed_procedure_step_start_time: str = ""
    attributes: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Instance(SQLModel, table=True):
    """One stored object: where its bytes are, its instance-level query attributes
    (PS3.18 Table 10.6.3-5), its DICOM JSON ready to serve, and the layout of its values."""

    __table_args__ = (
        UniqueConstraint("org", "sop_instance_uid"),
        # Study metadata, retrieves and instance queries read a study's instances in this order
        # straight from the index, with no sort of their rows (and their DICOM JSON).
        Index("ix_instance_org_study_series_number", "org", "study_uid", "series_uid", "instance_number", "id"),
        Index("ix_instance_blob", "blob_key"),
    )
    id: int | None = Field(default=None, primary_key=True)
    org: str = Field(max_length=64)
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None = None
    transfer_syntax: str
    blob_key: str
    size: int
    number_of_frames: int = 1
    attributes: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # DICOM JSON of the whole object (PS3.18 Annex F), BulkDataURIs relative to the instance.
    dicom_json: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # Where bulk values and frames lie in the blob: {"bulk": {...}, "frames": [...], ...}.
    layout: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    stored_at: datetime = Field(default_factory=utcnow)


class Account(SQLModel, table=True):
    """A local account (the embedded default; OIDC users have none): argon2 password hash."""

    username: str = Field(primary_key=True, max_length=128)
    password_hash: str
    display_name: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    disabled_at: datetime | None = None


class Membership(SQLModel, table=True):
    """A local account's role in an organisation (OIDC users carry theirs in token claims)."""

    __table_args__ = (UniqueConstraint("username", "org"),)
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(foreign_key="account.username", max_length=128)
    org: str = Field(foreign_key="organisation.slug", max_length=64)
    role: str = Field(max_length=16)


class ApiKey(SQLModel, table=True):
    """A machine credential: scoped to one organisation and role; only its SHA-256 is kept."""

    key_id: str = Field(primary_key=True, max_length=32)
    org: str = Field(foreign_key="organisation.slug", max_length=64, index=True)
    role: str = Field(max_length=16)
    name: str = ""
    secret_sha256: str = Field(max_length=64)
    created_by: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class PortalSession(SQLModel, table=True):
    """A signed-in browser: the cookie holds a random token, the index only its SHA-256."""

    token_sha256: str = Field(primary_key=True, max_length=64)
    actor: str = Field(max_length=256)
    kind: str = Field(max_length=16)
    display_name: str = ""
    memberships: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # JSON {org: role}
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class PendingSignIn(SQLModel, table=True):
    """An OIDC sign-in under way (authorization-code flow with PKCE): what the callback needs."""

    state_sha256: str = Field(primary_key=True, max_length=64)
    code_verifier: str = Field(max_length=128)
    nonce: str = Field(max_length=64)
    next_url: str = ""
    expires_at: datetime


# -- the audit trail (storage/audit_log.py) -----------------------------------------------------

# 64-bit: a national exchange logs billions of events in its retention period. On SQLite the
# INTEGER PRIMARY KEY is the rowid itself.
AUDIT_SEQUENCE = BigInteger().with_variant(Integer, "sqlite")


class AuditEntry(SQLModel, table=True):
    """One audit event (PS3.15 A.5), append-only and hash-chained: `hash` is the SHA-256 of the
    entry's canonical form, which includes `previous_hash`, so editing or deleting an entry
    breaks the chain. `sequence` is assigned from the chain head, under the chain lock."""

    __table_args__ = (
        Index("ix_auditentry_org_time", "org", "occurred_at"),
        Index("ix_auditentry_org_actor_time", "org", "actor", "occurred_at"),
        Index("ix_auditentry_org_action_time", "org", "action", "occurred_at"),
    )
    sequence: int = Field(sa_column=Column(AUDIT_SEQUENCE, primary_key=True, autoincrement=False))
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    action: str = Field(max_length=40)
    outcome: int  # PS3.15 EventOutcomeIndicator: 0, 4, 8 or 12
    outcome_description: str = ""
    actor: str = Field(max_length=256)
    actor_kind: str = Field(max_length=16)
    org: str | None = Field(default=None, max_length=64)  # None: e.g. a failed authentication
    transfer: str | None = Field(default=None, max_length=64)
    client_address: str = Field(default="", max_length=64)
    user_agent: str = ""
    request_id: str = Field(default="", max_length=64)
    detail: str = ""
    previous_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditParticipantObject(SQLModel, table=True):
    """A patient or study an audit event names (PS3.15 ParticipantObjectIdentification): one row
    each, so that a search by one Patient ID or Study Instance UID is an exact, indexed match.
    Part of the entry's hashed content: editing one breaks the entry's hash."""

    __table_args__ = (Index("ix_auditparticipantobject_identifier", "kind", "identifier", "issuer"),)
    sequence: int = Field(sa_column=Column(AUDIT_SEQUENCE, ForeignKey("auditentry.sequence"), primary_key=True,
                                           autoincrement=False))
    position: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    kind: str = Field(max_length=16)  # "patient" or "study"
    identifier: str = Field(max_length=128)  # Patient ID or Study Instance UID
    issuer: str = Field(default="", max_length=128)  # Issuer of Patient ID (patients only)


class AuditChainHead(SQLModel, table=True):
    """The newest entry of the audit chain (one row), updated in the transaction of every
    append: deleting the newest entries leaves it pointing past the end, which verify reports."""

    id: int = Field(default=1, sa_column=Column(Integer, primary_key=True, autoincrement=False))
    sequence: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(max_length=64)
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class AuditChainAnchor(SQLModel, table=True):
    """Where the audit chain starts once old entries are purged (one row): the sequence and hash
    of the last entry purged, which the first entry kept links to."""

    id: int = Field(default=1, sa_column=Column(Integer, primary_key=True, autoincrement=False))
    sequence: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(max_length=64)
    purged: int = Field(sa_column=Column(BigInteger, nullable=False))  # entries purged in all
    purged_before: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class Transfer(SQLModel, table=True):
    """Studies of one patient sent from one organisation to another, and where that stands."""

    __table_args__ = (
        Index("ix_transfer_destination_state", "destination", "state"),
        Index("ix_transfer_sender_state", "sender", "state"),
    )
    id: str = Field(primary_key=True, max_length=32)
    sender: str = Field(foreign_key="organisation.slug", max_length=64)
    destination: str = Field(foreign_key="organisation.slug", max_length=64)
    urgency: str = Field(max_length=16)  # routine, urgent, emergency
    note: str = ""
    intended_recipient: str = ""
    patient_id: str = ""
    patient_name: str = ""
    state: str = Field(max_length=16)
    via: str = Field(max_length=16)  # outbox (a STOW stream) or holdings (studies already held)
    has_report: bool = False  # a report (Encapsulated PDF or SR) travels with it
    reason: str = ""  # why it was rejected
    created_by: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)  # last object received or state change
    retained: bool = False  # the destination keeps its copies past its retention period


class TransferStudy(SQLModel, table=True):
    transfer_id: str = Field(foreign_key="transfer.id", primary_key=True, max_length=32)
    study_uid: str = Field(primary_key=True, max_length=64)
    instances: int = 0
    size: int = 0  # bytes of those instances, counted when they were sent (usage metering)


class TransferEvent(SQLModel, table=True):
    """A transfer's history, visible to both sides: each state it entered, who, when."""

    id: int | None = Field(default=None, primary_key=True)
    transfer_id: str = Field(foreign_key="transfer.id", max_length=32, index=True)
    state: str = Field(max_length=16)
    actor: str = ""
    org: str = ""
    at: datetime = Field(default_factory=utcnow)
    detail: str = ""


# -- the job queue (storage/jobs.py) and webhooks (exchange/webhooks.py) ------------------------

JOB_ID = BigInteger().with_variant(Integer, "sqlite")


class Job(SQLModel, table=True):
    """Background work: queued until `run_after`, running while a worker holds its lease
    (`leased_until`), then succeeded or failed (given up). AUTOINCREMENT on SQLite as well: a
    job id is the delivery id webhook receivers de-duplicate by, never reused after a purge."""

    __table_args__ = (
        Index("ix_job_state_run_after", "state", "run_after"),
        Index("ix_job_org_kind", "org", "kind", "id"),
        {"sqlite_autoincrement": True},
    )
    id: int | None = Field(default=None, sa_column=Column(JOB_ID, primary_key=True, autoincrement=True))
    kind: str = Field(max_length=64)
    org: str = Field(max_length=64)  # the organisation the work is for
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # JSON object
    state: str = Field(max_length=16)  # queued, running, succeeded, failed
    attempts: int = 0  # attempts started
    max_attempts: int
    run_after: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    leased_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_error: str = ""
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Webhook(SQLModel, table=True):
    """An organisation's subscription to exchange events, POSTed to `url`. Deliveries are signed
    with HMAC-SHA256 under `secret`, so the secret itself is kept (not a hash); it is shown once,
    when the webhook is added, and never listed."""

    id: int | None = Field(default=None, primary_key=True)
    org: str = Field(foreign_key="organisation.slug", max_length=64, index=True)
    url: str = Field(max_length=2048)
    secret: str = Field(max_length=128)
    events: str  # event names, space-separated
    description: str = ""
    created_by: str = ""
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    disabled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class TransferOriginal(SQLModel, table=True):
    """A received object as it arrived, kept when an import replaced it with a reconciled one:
    the original stays on disk, referenced, until its transfer expires."""

    transfer_id: str = Field(foreign_key="transfer.id", primary_key=True, max_length=32)
    sop_instance_uid: str = Field(primary_key=True, max_length=64)
    blob_key: str = Field(max_length=64, index=True)


# -- auto-forwarding to a PACS (storage/forwarding.py, exchange/forwarding.py) ------------------

class ForwardRule(SQLModel, table=True):
    """An organisation's rule that pushes each transfer it receives, if the transfer matches, to
    its PACS over STOW-RS. `authorization` is the Authorization header value the PACS expects,
    kept as given because it is sent with every request: it is protected where the index is (the
    SQLCipher file under the encryption-at-rest key, or PostgreSQL's own access control), and it
    is never listed, logged or audited. Match fields hold space-separated values; empty matches
    any. A removed rule is disabled, not deleted, so its forwarding records keep their rule."""

    id: int | None = Field(default=None, primary_key=True)
    org: str = Field(foreign_key="organisation.slug", max_length=64, index=True)
    name: str = Field(default="", max_length=200)
    target_url: str = Field(max_length=2048)  # a DICOMweb service root; STOW-RS goes to {target_url}/studies
    authorization: str = Field(default="", max_length=4096)
    urgencies: str = ""  # routine urgent emergency
    modalities: str = ""  # e.g. CT MR
    senders: str = ""  # organisation slugs
    mark_imported: bool = False  # every instance stored: the transfer becomes imported
    created_by: str = ""
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    disabled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class ForwardedInstance(SQLModel, table=True):
    """Where one instance of a transfer stands with one rule's PACS: pending until the PACS says
    it stored it (sent) or refused it for good (failed). Rows, not the job's payload: progress is
    recorded batch by batch while a job runs, a retry resends only what is still pending, and the
    API shows it per instance."""

    __table_args__ = (
        UniqueConstraint("rule_id", "transfer_id", "sop_instance_uid"),
        Index("ix_forwardedinstance_org_id", "org", "id"),
        Index("ix_forwardedinstance_transfer", "transfer_id", "rule_id", "state"),
    )
    id: int | None = Field(default=None, primary_key=True)
    rule_id: int = Field(foreign_key="forwardrule.id")
    transfer_id: str = Field(foreign_key="transfer.id", max_length=32)
    org: str = Field(max_length=64)  # the rule's organisation: the transfer's destination
    study_uid: str = Field(max_length=64)
    series_uid: str = Field(max_length=64)
    sop_instance_uid: str = Field(max_length=64)
    state: str = Field(max_length=16)  # pending, sent, failed
    attempts: int = 0  # requests that carried it
    last_error: str = ""
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


# -- retention (storage/retention.py, exchange/retention.py) ------------------------------------

class OwnStudy(SQLModel, table=True):
    """A study an organisation stored objects into through its own service root (not received
    through an outbox or a share): its own record, which retention never removes, received
    copies of the same study included."""

    org: str = Field(foreign_key="organisation.slug", primary_key=True, max_length=64)
    study_uid: str = Field(primary_key=True, max_length=64)
    first_stored_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


# -- patient access (storage/patient_access.py, exchange/patient_access.py) ----------------------

class PatientAccessLink(SQLModel, table=True):
    """A time-limited link through which a patient sees and downloads their own studies (a
    subject access request): the URL holds a random token, the index only its SHA-256."""

    link_id: str = Field(primary_key=True, max_length=32)
    org: str = Field(foreign_key="organisation.slug", max_length=64, index=True)
    patient_id: str = Field(max_length=64)
    study_uids: str  # the studies the link opens, space-separated, fixed when it is created
    token_sha256: str = Field(max_length=64, unique=True)
    created_by: str = ""
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


# Indexes that an earlier version created and a later one replaced: dropped on start
# (Database.create_schema), after the indexes that replace them are built.
RETIRED_INDEXES = ("ix_instance_org_study_series",)
