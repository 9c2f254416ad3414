"""The index database: an engine for SQLite (the embedded default) or PostgreSQL, with the
settings that make a commit durable, and one way to open a write transaction. With an index
key (encryption at rest) SQLite is SQLCipher: the database file, its WAL and its shared memory
file hold no plaintext."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateIndex
from sqlmodel import SQLModel

from storage import tables  # registers the tables on SQLModel.metadata
from storage.file_lock import file_lock


def database_url(url: str | None, data_dir: Path) -> str:
    """`None` means the embedded default: SQLite in the data directory."""
    if not url:
        return f"sqlite:///{data_dir / 'index.sqlite3'}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    def __init__(self, url: str, index_key: bytes | None = None):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            pool = {"pool_size": 8, "max_overflow": 8}
            if index_key is None:
                self.engine: Engine = create_engine(
                    url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)
            else:
                import sqlcipher3.dbapi2 as sqlcipher

                path = str(sqlite_file(url))
                self.engine = create_engine(url, module=sqlcipher,
                                            creator=lambda: open_sqlcipher(sqlcipher, path, index_key), **pool)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        # SQLite allows one writer: writers queue here rather than spin on SQLITE_BUSY, which
        # backs off in sleeps of milliseconds. Threads queue on the lock; the server's worker
        # processes (and `oix` commands) on an flock(2) of a file beside the index.
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._writer_file = f"{sqlite_file(url)}-writer.lock" if self.is_sqlite else ""
        self._wal_path = f"{sqlite_file(url)}-wal" if self.is_sqlite else ""
        self._version_lock = threading.Lock()
        self._version_connection = None  # never writes: see data_version

    def create_schema(self) -> None:
        """Create what is missing: tables, and the indexes a newer version declares on tables
        that already exist (built on its first start); then drop the retired indexes."""
        SQLModel.metadata.create_all(self.engine)
        with self.write() as connection:
            # Only what the catalogue lacks: on PostgreSQL even CREATE INDEX IF NOT EXISTS locks
            # its table, and a server running on the database (an `oix` command beside it) would
            # deadlock with it. IF [NOT] EXISTS: a second process may be starting too.
            catalogue = inspect(connection)
            for table in SQLModel.metadata.sorted_tables:
                present = {index["name"] for index in catalogue.get_indexes(table.name)}
                for index in table.indexes:
                    if index.name not in present:
                        connection.execute(CreateIndex(index, if_not_exists=True))
                for name in set(tables.RETIRED_INDEXES) & present:
                    connection.execute(text(f"DROP INDEX IF EXISTS {name}"))

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed durably when the block ends without error."""
        if self._write_lock is None:
            with self.engine.begin() as connection:
                yield connection
            return
        with self._write_lock, file_lock(self._writer_file), self.engine.begin() as connection:
            yield connection
        self._sync_log()

    def _sync_log(self) -> None:
        """Make SQLite's committed WAL durable. Commits run with synchronous=NORMAL under the
        writer lock and the fsync happens here, outside it, so concurrent writers share flushes
        instead of queueing behind each other's. A checkpoint syncs what it moves itself."""
        try:
            fd = os.open(self._wal_path, os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed and removed: the database file itself was synced
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def data_version(self) -> int | None:
        """A number that changes whenever any other connection, of this process or another,
        commits to the SQLite index (PRAGMA data_version, asked of a connection that never
        writes); None on PostgreSQL. About a microsecond: SQLite reads it from the index's
        shared memory, so an event loop may ask."""
        if not self.is_sqlite:
            return None
        with self._version_lock:
            if self._version_connection is None:
                pooled = self.engine.raw_connection()
                pooled.detach()  # out of the pool: no write ever runs on it
                self._version_connection = pooled
            return self._version_connection.dbapi_connection.execute("PRAGMA data_version").fetchone()[0]

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    def dispose(self) -> None:
        with self._version_lock:
            if self._version_connection is not None:
                self._version_connection.close()
                self._version_connection = None
        self.engine.dispose()


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite index (None for PostgreSQL)."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite") else None


def open_sqlcipher(sqlcipher, path: str, index_key: bytes):
    """A SQLCipher connection keyed before anything else touches the file. A raw 256-bit key
    (x'…') rather than a passphrase: the key is already uniformly random (HKDF), so SQLCipher's
    PBKDF2 on every connection would cost time and add nothing."""
    connection = sqlcipher.connect(path, check_same_thread=False, timeout=30)
    connection.execute(f"PRAGMA key = \"x'{index_key.hex()}'\"")
    return connection


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the writer. synchronous=NORMAL: the commit itself does not
    # fsync; Database.write() fsyncs the WAL after it, before anyone is told (DESIGN invariant 1).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA case_sensitive_like=ON")  # as LIKE is on PostgreSQL
    cursor.close()
