"""INSERTs of many rows on the store's hot path (index rows, audit entries): SQL written once
per dialect and row count, run on the DBAPI cursor of the caller's transaction.

SQLAlchemy Core spends more processor time preparing a 20-row insert (compiling it, processing
every bound value, building its result) than SQLite spends running it, and a STOW-RS store runs
these inserts while it holds the index's single writer lock. Values still go through each
column type's own bind processor for the dialect, and columns left out take their Python-side
defaults, so the rows stored are the ones Core would store (DateTime as SQLite's text, say)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.exc import DBAPIError

# Far below SQLite's 32,766 and PostgreSQL's 65,535 bound parameters per statement.
MAX_ROWS_PER_STATEMENT = 500
PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class BulkInsert:
    """`BulkInsert(table, conflict, returning).run(connection, rows)`: every column but the
    autoincrementing key is written; a column a row leaves out takes its default (None when it
    has none and may be NULL). A row whose `conflict` columns match a held row is left out;
    without `conflict`, it is an error (IntegrityError), as with Core."""

    def __init__(self, table: Table, conflict: Sequence[str] = (), returning: str | None = None):
        self.table = table
        self.columns = [c for c in table.columns if c is not table.autoincrement_column]
        self.fallbacks = [_default_of(c) for c in self.columns]
        self.conflict = list(conflict)
        self.returning = returning
        self._sql: dict[tuple[str, int], str] = {}
        # Per dialect: each column's name, its default and its bind processor (None: none).
        self._fields: dict[str, list[tuple[str, Callable[[], Any], Callable[[Any], Any] | None]]] = {}

    def run(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> list[Any]:
        """Insert `rows` (dicts by column name); returns the `returning` column of the rows
        inserted (none for a row that conflicted)."""
        dialect = connection.dialect
        fields = self._fields.get(dialect.name)
        if fields is None:
            fields = [(c.name, fallback, c.type.dialect_impl(dialect).bind_processor(dialect))
                      for c, fallback in zip(self.columns, self.fallbacks)]
            self._fields[dialect.name] = fields
        cursor = connection.connection.cursor()
        returned: list[Any] = []
        try:
            for start in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
                batch = rows[start:start + MAX_ROWS_PER_STATEMENT]
                parameters: list[Any] = []
                for row in batch:
                    for name, fallback, process in fields:
                        value = row[name] if name in row else fallback()
                        parameters.append(value if process is None or value is None else process(value))
                statement = self._statement(connection, len(batch))
                try:
                    cursor.execute(statement, parameters)
                except dialect.loaded_dbapi.Error as exc:  # as Core raises it: sqlalchemy.exc.IntegrityError, …
                    raise DBAPIError.instance(statement, parameters, exc, dialect.loaded_dbapi.Error,
                                              dialect=dialect) from exc
                if self.returning is not None:
                    returned += [found[0] for found in cursor.fetchall()]
        finally:
            cursor.close()
        return returned

    def _statement(self, connection: Connection, count: int) -> str:
        dialect = connection.dialect
        sql = self._sql.get((dialect.name, count))
        if sql is None:
            quote = dialect.identifier_preparer.quote
            row = "(" + ", ".join([PLACEHOLDERS[dialect.paramstyle]] * len(self.columns)) + ")"
            sql = (f"INSERT INTO {quote(self.table.name)} ({', '.join(quote(c.name) for c in self.columns)}) "
                   f"VALUES {', '.join([row] * count)}")
            if self.conflict:
                sql += f" ON CONFLICT ({', '.join(quote(name) for name in self.conflict)}) DO NOTHING"
            if self.returning is not None:
                sql += f" RETURNING {quote(self.returning)}"
            self._sql[(dialect.name, count)] = sql
        return sql


def _default_of(column) -> Callable[[], Any]:
    """What a column left out of a row holds: its Python-side default (SQLAlchemy wraps a
    callable one to take an execution context, which these do not use), else NULL."""
    default = column.default
    if default is None:
        if not column.nullable:
            return _required(column.name)
        return lambda: None
    if default.is_callable:
        return lambda: default.arg(None)
    value = default.arg
    return lambda: value


def _required(name: str) -> Callable[[], Any]:
    def missing() -> Any:
        raise KeyError(f"a row to insert has no value for column {name!r}, which has no default")
    return missing
