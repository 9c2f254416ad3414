"""Organisation rows: the directory the exchange layer keeps on the index database."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from storage.database import Database
from storage.tables import Organisation

ORGANISATION = Organisation.__table__


class OrganisationExists(Exception):
    pass


class OrganisationTable:
    def __init__(self, database: Database):
        self.database = database

    def add(self, organisation: Organisation) -> Organisation:
        try:
            with self.database.write() as connection:
                connection.execute(ORGANISATION.insert().values(**organisation.model_dump()))
        except IntegrityError as exc:
            raise OrganisationExists(organisation.slug) from exc
        return organisation

    def update(self, slug: str, values: dict) -> bool:
        with self.database.write() as connection:
            return connection.execute(update(ORGANISATION).where(ORGANISATION.c.slug == slug)
                                      .values(**values)).rowcount > 0

    def get(self, slug: str) -> Organisation | None:
        with self.database.read() as connection:
            row = connection.execute(select(ORGANISATION).where(ORGANISATION.c.slug == slug)).mappings().first()
        return Organisation(**row) if row else None

    def all(self) -> list[Organisation]:
        with self.database.read() as connection:
            rows = connection.execute(select(ORGANISATION).order_by(ORGANISATION.c.slug)).mappings().all()
        return [Organisation(**row) for row in rows]
