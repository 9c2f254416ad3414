"""Which keys a data directory is encrypted under, recorded beside its data in `encryption.json`,
and the check made before anything opens it: the wrong keys, or plaintext where encryption is
configured, refuse to start rather than fail on some later read or mix plaintext in."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from storage.keyring import EncryptionError, Keyring, derive_key, key_check

RECORD_NAME = "encryption.json"
INDEX_KEY_PURPOSE = "oix-index"
SQLITE_MAGIC = b"SQLite format 3\0"  # sqlite.org/fileformat.html 1.3.1; SQLCipher encrypts it too


class DataDirRefused(EncryptionError):
    """The data directory cannot be opened with the configured keys; the message says why."""


@dataclass
class AtRestRecord:
    """What `encryption.json` says. Key ids and check values only: no key is ever written here."""

    # Every key id blobs may be under -> its key_check (None: a key rotation met blobs under an id
    # the keyring did not hold, so their key is unknown).
    keys: dict[str, str | None] = field(default_factory=dict)
    index_key: str | None = None  # the key id the SQLite index key is derived from
    unencrypted_blobs: bool = False  # encrypting a plaintext data directory has not finished


def read_record(data_dir: Path) -> AtRestRecord | None:
    try:
        text = (data_dir / RECORD_NAME).read_text()
    except FileNotFoundError:
        return None
    return AtRestRecord(**json.loads(text))


def write_record(data_dir: Path, record: AtRestRecord) -> None:
    """Replace the record atomically and durably (a crash leaves the old one or the new)."""
    temporary = data_dir / f".{RECORD_NAME}.{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(asdict(record), handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, data_dir / RECORD_NAME)
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextmanager
def locked_record(data_dir: Path) -> Iterator[None]:
    """Serialise updates of the record between processes on one data directory (flock(2) on the
    directory itself: no lock file to leave behind)."""
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def index_key_for(keyring: Keyring, key_id: str) -> bytes:
    return derive_key(keyring.key(key_id), INDEX_KEY_PURPOSE)


def is_plaintext_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except FileNotFoundError:
        return False


def holds_blobs(blob_dir: Path) -> bool:
    for _directory, _subdirectories, files in os.walk(blob_dir):
        if files:
            return True
    return False


def open_data_dir(data_dir: Path, keyring: Keyring | None, sqlite_index: Path | None) -> bytes | None:
    """Check that `keyring` fits what `data_dir` holds and record that the active key will be
    written under; return the SQLCipher key of the SQLite index at `sqlite_index` (None when
    encryption is off or the index is not SQLite)."""
    with locked_record(data_dir):
        record = read_record(data_dir)
        if keyring is None:
            if record is not None:
                raise DataDirRefused(
                    f"{data_dir} is encrypted at rest: give its key file (--encryption-key-file, "
                    "OIX_ENCRYPTION_KEY_FILE) or key (OIX_ENCRYPTION_KEY)")
            return None
        if record is None:
            if holds_blobs(data_dir / "blobs") or (sqlite_index and sqlite_index.exists()):
                raise DataDirRefused(
                    f"{data_dir} holds data stored without encryption. To encrypt it, stop every server "
                    "on it and run `oix keys rotate --index` with the same key configuration, then start again")
            record = AtRestRecord()
        if record.unencrypted_blobs:
            raise DataDirRefused(f"encrypting the plaintext blobs of {data_dir} has not finished: "
                                 "run `oix keys rotate` again")
        _check_keys(data_dir, record, keyring)
        index_key = None
        if sqlite_index is not None:
            if is_plaintext_sqlite(sqlite_index):
                raise DataDirRefused(f"the index {sqlite_index} is not encrypted: stop every server on it and "
                                     "run `oix keys rotate --index`")
            if record.index_key is None:
                if sqlite_index.exists() and sqlite_index.stat().st_size:
                    raise DataDirRefused(f"{data_dir / RECORD_NAME} does not say which key encrypts the index "
                                         f"{sqlite_index}")
                record.index_key = keyring.active_id
            index_key = index_key_for(keyring, record.index_key)
        record.keys.setdefault(keyring.active_id, key_check(keyring.active_key))
        write_record(data_dir, record)
        return index_key


def _check_keys(data_dir: Path, record: AtRestRecord, keyring: Keyring) -> None:
    needed = dict(record.keys)
    if record.index_key is not None and record.index_key not in needed:
        raise DataDirRefused(f"{data_dir / RECORD_NAME} names index key '{record.index_key}' without its check")
    for key_id, check in needed.items():
        key = keyring.keys.get(key_id)
        if key is None:
            raise DataDirRefused(f"{data_dir} holds data encrypted under key '{key_id}', which the keyring "
                                 "lacks: add it back to the key file")
        if check is not None and key_check(key) != check:
            raise DataDirRefused(f"key '{key_id}' of the keyring is not the key {data_dir} was encrypted with "
                                 "under that id")
