"""Usage metering: per organisation and calendar month (UTC), the transfers it sent and received
and the studies, instances and bytes they carried. Counted for planning, never priced: nothing
is charged per study."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from exchange.errors import ExchangeError
from exchange.organisations import OrganisationDirectory
from storage.usage import UsageTable, Volume

MAX_MONTHS = 120  # one request spans ten years at most
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class InvalidUsagePeriod(ExchangeError):
    pass


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month in UTC: where a transfer is counted is the month it was opened in."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        """`2026-11` → Month(2026, 11); ValueError otherwise."""
        found = _MONTH.match(text.strip())
        if not found or not 1 <= int(found.group(2)) <= 12:
            raise ValueError(f"a month is written YYYY-MM, e.g. 2026-11, not '{text}'")
        return cls(int(found.group(1)), int(found.group(2)))

    @classmethod
    def of(cls, moment: datetime) -> Month:
        moment = moment.astimezone(timezone.utc) if moment.tzinfo else moment
        return cls(moment.year, moment.month)

    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=timezone.utc)

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def minus(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 - months
        return Month(index // 12, index % 12 + 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True)
class MonthlyUsage:
    org: str
    month: Month
    sent: Volume  # the transfers the organisation sent, opened in the month
    received: Volume  # the transfers it received, opened in the month


class Usage:
    def __init__(self, table: UsageTable, directory: OrganisationDirectory):
        self.table = table
        self.directory = directory

    def months(self, org: str, first: Month, last: Month) -> list[MonthlyUsage]:
        """`org`'s usage in each month from `first` to `last`, both included."""
        self.directory.require(org)
        if last < first:
            raise InvalidUsagePeriod(f"the period ends ({last}) before it starts ({first})")
        if (last.year - first.year) * 12 + last.month - first.month >= MAX_MONTHS:
            raise InvalidUsagePeriod(f"ask for {MAX_MONTHS} months at most")
        found = []
        month = first
        while month <= last:
            since, until = month.start(), month.next().start()
            found.append(MonthlyUsage(org, month, self.table.volume("sender", org, since, until),
                                      self.table.volume("destination", org, since, until)))
            month = month.next()
        return found
