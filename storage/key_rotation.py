"""Key rotation at rest (`oix keys rotate`): re-encrypt every blob that is not under the active
key, plaintext ones included (which is how a data directory becomes encrypted), one blob at a
time and atomically (os.replace), so a running server keeps serving and an interrupted run is
simply run again; and, with every server stopped, the SQLite index."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from storage.at_rest import (
    AtRestRecord,
    DataDirRefused,
    holds_blobs,
    index_key_for,
    is_plaintext_sqlite,
    locked_record,
    read_record,
    write_record,
)
from storage.blobs import FileBlobStore, sync_filesystem
from storage.content_key import NameCheck
from storage.encryption import DecryptingReader, NotEncrypted, SegmentWriter, header_of
from storage.keyring import EncryptionError, Keyring, key_check

PLAINTEXT = "plaintext"  # stands for "no key" where a former key id is reported
CHUNK = 1 << 20


class DamagedBlob(EncryptionError):
    """A blob whose plaintext does not hash to its name: it is left as it is."""


@dataclass
class RotationReport:
    active_id: str
    rotated: Counter[str] = field(default_factory=Counter)  # former key id (or PLAINTEXT) -> blobs
    current: int = 0  # blobs already under the active key
    failed: dict[str, str] = field(default_factory=dict)  # blob key -> why it was left as it was
    left_under: set[str] = field(default_factory=set)  # key ids (or PLAINTEXT) the failed blobs are under
    index_from: str | None = None  # the index's former key id (or PLAINTEXT), if it was re-encrypted


def rotate(store: FileBlobStore, keyring: Keyring, sqlite_index: Path | None = None) -> RotationReport:
    """Bring every blob (and, given its path, the SQLite index) under the active key, then
    record in `encryption.json` the key ids still in use, so that a key no longer needed can
    be removed from the key file and one still needed cannot."""
    data_dir = store.root
    with locked_record(data_dir):
        start = read_record(data_dir) or AtRestRecord(unencrypted_blobs=holds_blobs(store.blob_dir))
        start.keys.setdefault(keyring.active_id, key_check(keyring.active_key))
        write_record(data_dir, start)
    report = RotationReport(keyring.active_id)
    if sqlite_index is not None:
        report.index_from = rotate_index(sqlite_index, keyring, start.index_key)
        with locked_record(data_dir):
            record = read_record(data_dir) or start
            record.index_key = keyring.active_id if sqlite_index.exists() else None
            write_record(data_dir, record)
    placed_in: set[Path] = set()
    for path in _blob_files(store.blob_dir):
        if _rotate_blob(store, keyring, path, report):
            placed_in.add(path.parent)
    sync_filesystem(data_dir, sorted(placed_in))  # every replacement durable before the record drops a key
    with locked_record(data_dir):
        record = read_record(data_dir) or start
        started_meanwhile = set(record.keys) - set(start.keys)  # servers started during the pass
        keep = {keyring.active_id, *started_meanwhile, *report.left_under, record.index_key} - {PLAINTEXT}
        record.keys = {key_id: record.keys.get(key_id) or _check_of(keyring, key_id) for key_id in keep
                       if key_id is not None}
        record.unencrypted_blobs = PLAINTEXT in report.left_under
        write_record(data_dir, record)
    return report


def _check_of(keyring: Keyring, key_id: str) -> str | None:
    key = keyring.keys.get(key_id)
    return key_check(key) if key is not None else None


def _blob_files(blob_dir: Path) -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(blob_dir):
        subdirectories.sort()
        for name in sorted(files):
            yield Path(directory) / name


def _rotate_blob(store: FileBlobStore, keyring: Keyring, path: Path, report: RotationReport) -> bool:
    """Re-encrypt one blob under the active key unless it is already; True if it was replaced."""
    try:
        former = header_of(path).key_id
    except NotEncrypted:
        former = PLAINTEXT
    except FileNotFoundError:
        return False  # deleted since the directory was listed
    if former == keyring.active_id:
        report.current += 1
        return False
    temporary = store.incoming / f"{os.getpid()}-rotate-{os.urandom(4).hex()}"  # removed at start if we die
    try:
        check = _reencrypt(path, former, temporary, keyring)
        if not check.matches(path.name):
            raise DamagedBlob(f"its plaintext hashes to {check.key}, not to its name")
        # Shared with stores, exclusive of removals: a blob deleted meanwhile is not brought back.
        with store.placing():
            if not path.exists():
                return False
            os.replace(temporary, path)
    except FileNotFoundError:
        return False
    except EncryptionError as exc:
        report.failed[path.name] = str(exc)
        report.left_under.add(former)
        return False
    finally:
        temporary.unlink(missing_ok=True)
    report.rotated[former] += 1
    return True


def _reencrypt(path: Path, former: str, temporary: Path, keyring: Keyring) -> NameCheck:
    """Write `path`'s plaintext encrypted under the active key to `temporary`, durably; return
    the plaintext's hashes."""
    check = NameCheck()
    source = open(path, "rb") if former == PLAINTEXT else DecryptingReader(path, keyring)
    writer = SegmentWriter(temporary, keyring)
    try:
        with source:
            while chunk := source.read(CHUNK):
                check.update(chunk)
                writer.write(chunk)
    finally:
        writer.close()
    fd = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return check


def rotate_index(path: Path, keyring: Keyring, index_key_id: str | None) -> str | None:
    """Re-encrypt the SQLite index under the active key (from plaintext, or from the key
    `index_key_id`) with sqlcipher_export into a new file that then replaces it. Refused while
    any other process has the index open. Returns the former key id, None if nothing changed."""
    if not path.exists():
        return None
    if is_plaintext_sqlite(path):
        former, source_key = PLAINTEXT, None
    elif index_key_id is None:
        raise DataDirRefused(f"the index {path} is encrypted, but the data directory's record does not say "
                             "under which key")
    elif index_key_id == keyring.active_id:
        return None
    else:
        former, source_key = index_key_id, index_key_for(keyring, index_key_id)
    import sqlcipher3.dbapi2 as sqlcipher

    target = path.with_name(f".{path.name}.rotating")
    target.unlink(missing_ok=True)
    connection = sqlcipher.connect(str(path), timeout=1, isolation_level=None)
    try:
        if source_key is not None:
            connection.execute(f"PRAGMA key = \"x'{source_key.hex()}'\"")
        try:
            # Leaving WAL mode checkpoints the log, and needs the only connection to the database:
            # a running server holds one, whose later writes would go to the replaced file.
            connection.execute("PRAGMA journal_mode=DELETE")
        except sqlcipher.OperationalError as exc:
            raise DataDirRefused(f"the index {path} is open in another process ({exc}): stop every server "
                                 "on this data directory first") from exc
        new_key = index_key_for(keyring, keyring.active_id)
        connection.execute(f"ATTACH DATABASE ? AS rotated KEY \"x'{new_key.hex()}'\"", (str(target),))
        connection.execute("SELECT sqlcipher_export('rotated')")
        connection.execute("DETACH DATABASE rotated")
    finally:
        connection.close()
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    os.replace(target, path)
    sync_filesystem(path.parent, [path.parent])
    return former
