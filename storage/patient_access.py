"""Patient access links (a patient's time-limited link to their own studies) and the study and
series rows a link's page lists, always read for one organisation and one patient."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from storage.database import Database
from storage.tables import PatientAccessLink, Series, Study

LINK = PatientAccessLink.__table__
STUDY = Study.__table__
SERIES = Series.__table__


@dataclass(frozen=True)
class PatientSeries:
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str


@dataclass(frozen=True)
class PatientStudy:
    study_uid: str
    study_date: str
    study_description: str
    accession_number: str
    series: tuple[PatientSeries, ...]


class PatientAccessTable:
    def __init__(self, database: Database):
        self.database = database

    def add(self, link: PatientAccessLink) -> None:
        with self.database.write() as connection:
            connection.execute(LINK.insert().values(**link.model_dump()))

    def by_token(self, token_sha256: str) -> PatientAccessLink | None:
        with self.database.read() as connection:
            row = connection.execute(select(LINK).where(LINK.c.token_sha256 == token_sha256)).mappings().first()
        return PatientAccessLink(**row) if row else None

    def of_org(self, org: str, limit: int) -> list[PatientAccessLink]:
        """The organisation's links, newest first."""
        with self.database.read() as connection:
            rows = connection.execute(select(LINK).where(LINK.c.org == org)
                                      .order_by(LINK.c.created_at.desc()).limit(limit)).mappings().all()
        return [PatientAccessLink(**row) for row in rows]

    def revoke(self, org: str, link_id: str, at: datetime) -> PatientAccessLink | None:
        """The link, revoked now; None if `org` has no such link not yet revoked."""
        with self.database.write() as connection:
            changed = connection.execute(update(LINK).where(LINK.c.org == org, LINK.c.link_id == link_id,
                                                            LINK.c.revoked_at.is_(None))
                                         .values(revoked_at=at)).rowcount
            row = connection.execute(select(LINK).where(LINK.c.link_id == link_id)).mappings().first()
        return PatientAccessLink(**row) if changed and row else None

    def patient_ids(self, org: str, limit: int) -> list[str]:
        """The Patient IDs of the studies `org` holds (ix_study_org_patient_id), in order."""
        with self.database.read() as connection:
            rows = connection.execute(select(STUDY.c.patient_id).where(STUDY.c.org == org, STUDY.c.patient_id != "")
                                      .distinct().order_by(STUDY.c.patient_id).limit(limit)).all()
        return [patient_id for (patient_id,) in rows]

    def study_uids(self, org: str, patient_id: str) -> list[str]:
        with self.database.read() as connection:
            rows = connection.execute(select(STUDY.c.study_uid).where(STUDY.c.org == org,
                                                                      STUDY.c.patient_id == patient_id)
                                      .order_by(STUDY.c.study_date.desc(), STUDY.c.study_uid)).all()
        return [study_uid for (study_uid,) in rows]

    def studies(self, org: str, patient_id: str, study_uids: list[str]) -> list[PatientStudy]:
        """Those of `study_uids` that `org` still holds for the patient, with their series."""
        with self.database.read() as connection:
            studies = connection.execute(
                select(STUDY.c.study_uid, STUDY.c.study_date, STUDY.c.study_description, STUDY.c.accession_number)
                .where(STUDY.c.org == org, STUDY.c.patient_id == patient_id, STUDY.c.study_uid.in_(study_uids))
                .order_by(STUDY.c.study_date.desc(), STUDY.c.study_uid)).all()
            series: dict[str, list[PatientSeries]] = {}
            for row in connection.execute(
                    select(SERIES.c.study_uid, SERIES.c.series_uid, SERIES.c.modality, SERIES.c.series_number,
                           SERIES.c.series_description)
                    .where(SERIES.c.org == org, SERIES.c.study_uid.in_([study.study_uid for study in studies]))
                    .order_by(SERIES.c.study_uid, SERIES.c.series_number, SERIES.c.series_uid)):
                series.setdefault(row.study_uid, []).append(
                    PatientSeries(row.series_uid, row.modality, row.series_number, row.series_description))
        return [PatientStudy(study.study_uid, study.study_date, study.study_description, study.accession_number,
                             tuple(series.get(study.study_uid, ()))) for study in studies]
