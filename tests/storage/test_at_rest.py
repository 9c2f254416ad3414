"""A data directory's record of its encryption keys (`encryption.json`), the refusals made when
the configured keys do not fit what it holds, and its SQLite index encrypted with SQLCipher."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from storage.at_rest import DataDirRefused, open_data_dir, read_record
from storage.blobs import FileBlobStore
from storage.database import Database
from storage.key_rotation import rotate
from storage.keyring import Keyring, key_check


def keyring(*ids: str, keys: dict[str, bytes] | None = None) -> Keyring:
    keys = dict(keys or {})
    keys.update({key_id: os.urandom(32) for key_id in ids if key_id not in keys})
    return Keyring(keys, ids[-1])


def index_of(data_dir):
    return data_dir / "index.sqlite3"


def open_index(data_dir, ring: Keyring | None) -> Database:
    database = Database(f"sqlite:///{index_of(data_dir)}", open_data_dir(data_dir, ring, index_of(data_dir)))
    database.create_schema()
    return database


def test_a_new_data_dir_records_the_active_key_and_encrypts_its_index(tmp_path):
    ring = keyring("k1")
    database = open_index(tmp_path, ring)
    with database.write() as connection:
        connection.execute(text("CREATE TABLE note (body TEXT)"))
        connection.execute(text("INSERT INTO note VALUES ('SMITH^JOHN')"))
    with database.read() as connection:
        assert connection.execute(text("SELECT body FROM note")).scalar_one() == "SMITH^JOHN"
    database.dispose()
    record = read_record(tmp_path)
    assert record.keys == {"k1": key_check(ring.keys["k1"])} and record.index_key == "k1"
    for name in os.listdir(tmp_path):
        if name.startswith("index.sqlite3"):
            assert b"SMITH^JOHN" not in (tmp_path / name).read_bytes()
            assert not (tmp_path / name).read_bytes().startswith(b"SQLite format 3")


def test_without_encryption_nothing_is_recorded_and_the_index_is_plain_sqlite(tmp_path):
    open_index(tmp_path, None).dispose()
    assert read_record(tmp_path) is None
    assert index_of(tmp_path).read_bytes().startswith(b"SQLite format 3")


def test_an_encrypted_data_dir_is_refused_without_keys(tmp_path):
    open_index(tmp_path, keyring("k1")).dispose()
    with pytest.raises(DataDirRefused, match="is encrypted at rest"):
        open_data_dir(tmp_path, None, index_of(tmp_path))


def test_a_keyring_without_a_recorded_key_is_refused(tmp_path):
    open_index(tmp_path, keyring("k1")).dispose()
    with pytest.raises(DataDirRefused, match="key 'k1'.*lacks"):
        open_data_dir(tmp_path, keyring("k2"), index_of(tmp_path))


def test_a_different_key_under_a_recorded_id_is_refused(tmp_path):
    open_index(tmp_path, keyring("k1")).dispose()
    with pytest.raises(DataDirRefused, match="is not the key"):
        open_data_dir(tmp_path, keyring("k1"), index_of(tmp_path))


def test_plaintext_blobs_are_refused_until_rotated(tmp_path):
    writer = FileBlobStore(tmp_path).new_writer()
    writer.write(b"plaintext DICM")
    FileBlobStore(tmp_path).commit([writer])
    ring = keyring("k1")
    with pytest.raises(DataDirRefused, match="stored without encryption"):
        open_data_dir(tmp_path, ring, None)
    rotate(FileBlobStore(tmp_path, ring), ring)
    assert open_data_dir(tmp_path, ring, None) is None  # blobs only: no SQLite index here
    assert read_record(tmp_path).unencrypted_blobs is False


def test_rotation_of_the_index_re_keys_it_and_an_old_key_is_then_no_longer_needed(tmp_path):
    old = keyring("k1")
    database = open_index(tmp_path, old)
    with database.write() as connection:
        connection.execute(text("CREATE TABLE note (body TEXT)"))
        connection.execute(text("INSERT INTO note VALUES ('kept')"))
    database.dispose()
    new = keyring("k1", "k2", keys=old.keys)
    report = rotate(FileBlobStore(tmp_path, new), new, index_of(tmp_path))
    assert report.index_from == "k1"
    assert set(read_record(tmp_path).keys) == {"k2"} and read_record(tmp_path).index_key == "k2"
    only_new = Keyring({"k2": new.keys["k2"]}, "k2")
    database = open_index(tmp_path, only_new)
    with database.read() as connection:
        assert connection.execute(text("SELECT body FROM note")).scalar_one() == "kept"
    database.dispose()


def test_rotation_of_an_index_another_process_has_open_is_refused(tmp_path):
    ring = keyring("k1")
    database = open_index(tmp_path, ring)
    with database.read() as connection:
        connection.execute(text("SELECT 1"))  # a pooled connection stays open, as a server's does
        newer = keyring("k1", "k2", keys=ring.keys)
        with pytest.raises(DataDirRefused, match="open in another process"):
            rotate(FileBlobStore(tmp_path, newer), newer, index_of(tmp_path))
    database.dispose()
