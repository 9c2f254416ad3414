"""Webhook subscription rows: where an organisation wants its exchange events POSTed, and the
secret its deliveries are signed with. A removed webhook is disabled, not deleted, so the
deliveries made to it keep something to name."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from storage.database import Database
from storage.tables import Webhook

WEBHOOK = Webhook.__table__


class UnknownWebhookOrganisation(Exception):
    pass


class WebhookTable:
    def __init__(self, database: Database):
        self.database = database

    def add(self, org: str, url: str, secret: str, events: tuple[str, ...], created_at: datetime,
            description: str = "", created_by: str = "") -> Webhook:
        values = {"org": org, "url": url, "secret": secret, "events": " ".join(events), "description": description,
                  "created_by": created_by, "created_at": created_at, "disabled_at": None}
        try:
            with self.database.write() as connection:
                webhook_id = connection.execute(WEBHOOK.insert().values(**values)).inserted_primary_key[0]
        except IntegrityError as exc:  # the organisation's foreign key
            raise UnknownWebhookOrganisation(org) from exc
        return Webhook(id=webhook_id, **values)

    def get(self, webhook_id: int) -> Webhook | None:
        with self.database.read() as connection:
            row = connection.execute(select(WEBHOOK).where(WEBHOOK.c.id == webhook_id)).mappings().first()
        return Webhook(**row) if row else None

    def of_org(self, org: str, include_disabled: bool = False, connection: Connection | None = None) -> list[Webhook]:
        """`org`'s webhooks, oldest first; with `connection`, read inside the caller's transaction."""
        statement = select(WEBHOOK).where(WEBHOOK.c.org == org)
        if not include_disabled:
            statement = statement.where(WEBHOOK.c.disabled_at.is_(None))
        statement = statement.order_by(WEBHOOK.c.id)
        if connection is not None:
            rows = connection.execute(statement).mappings().all()
        else:
            with self.database.read() as opened:
                rows = opened.execute(statement).mappings().all()
        return [Webhook(**row) for row in rows]

    def disable(self, org: str, webhook_id: int, at: datetime) -> bool:
        """Disable `org`'s webhook `webhook_id`; False if it has no such webhook still enabled."""
        with self.database.write() as connection:
            return connection.execute(update(WEBHOOK).where(
                WEBHOOK.c.id == webhook_id, WEBHOOK.c.org == org, WEBHOOK.c.disabled_at.is_(None))
                .values(disabled_at=at)).rowcount == 1
