"""The filesystem blob store: content-addressed, the same bytes stored once, spooled uploads
moved into place on commit, and a lock that keeps removals away from stores in flight."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

import pytest

from storage.blobs import FileBlobStore
from storage.content_key import content_key
from storage.direct_file import BLOCK


def spool(store: FileBlobStore, *chunks: bytes):
    writer = store.new_writer()
    for chunk in chunks:
        writer.write(chunk)
    return writer


def test_a_blob_is_keyed_by_the_hash_of_its_bytes(tmp_path):
    store = FileBlobStore(tmp_path)
    writer = spool(store, b"DICM", b" and more bytes")
    assert writer.path.parent == tmp_path / "incoming"
    store.commit([writer])
    key = content_key(b"DICM and more bytes")
    assert writer.key == key and writer.size == 19
    assert store.path_of(key) == tmp_path / "blobs" / key[:2] / key[2:4] / key
    assert store.path_of(key).read_bytes() == b"DICM and more bytes"
    assert store.exists(key)
    assert list((tmp_path / "incoming").iterdir()) == []


def test_a_blob_is_the_same_bytes_as_a_held_name_that_is_their_former_sha256_name(tmp_path):
    """Blobs stored before BLAKE3 named blobs keep their SHA-256 names (storage/content_key.py)."""
    store = FileBlobStore(tmp_path)
    writer = spool(store, b"DICM", b" stored again")
    store.commit([writer])
    assert store.same_bytes(hashlib.sha256(b"DICM stored again").hexdigest(), writer.key)
    assert not store.same_bytes(hashlib.sha256(b"other bytes").hexdigest(), writer.key)


def test_buffered_bytes_touch_the_filesystem_only_when_flushed(tmp_path):
    """STOW receives into memory on the event loop; the file is created, written and hashed by
    `flush` (a worker thread), and `write` flushes by itself past FLUSH_BYTES. Past the header,
    the file takes whole blocks only: the last partial one waits for more bytes or `close`."""
    store = FileBlobStore(tmp_path)
    writer = store.new_writer()
    writer.buffer(b"DICM")
    assert writer.pending_bytes == 4 and not writer.path.exists()
    writer.flush()
    assert writer.pending_bytes == 0 and writer.path.read_bytes() == b"DICM"
    writer.write(b"x" * writer.FLUSH_BYTES)
    assert writer.pending_bytes == 0
    assert 4 + writer.FLUSH_BYTES - BLOCK < writer.path.stat().st_size <= 4 + writer.FLUSH_BYTES
    writer.buffer(b" tail")
    store.commit([writer])
    data = b"DICM" + b"x" * writer.FLUSH_BYTES + b" tail"
    assert writer.key == content_key(data) and store.path_of(writer.key).read_bytes() == data


def test_a_discarded_blob_leaves_nothing_flushed_or_not(tmp_path):
    store = FileBlobStore(tmp_path)
    never_flushed, flushed = store.new_writer(), store.new_writer()
    never_flushed.buffer(b"held in memory only")
    flushed.buffer(b"on disk")
    flushed.flush()
    for writer in (never_flushed, flushed):
        writer.discard()
    assert list((tmp_path / "incoming").iterdir()) == []


def test_identical_bytes_are_stored_once(tmp_path):
    """DESIGN (data model): the same bytes held for two organisations are one blob."""
    store = FileBlobStore(tmp_path)
    first, second = spool(store, b"same"), spool(store, b"sa", b"me")
    store.commit([first, second])
    assert first.key == second.key
    assert [p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == [first.key]


def test_discard_removes_the_spooled_bytes(tmp_path):
    store = FileBlobStore(tmp_path)
    writer = spool(store, b"never kept")
    writer.discard()
    assert not writer.path.exists()
    assert not any((tmp_path / "blobs").rglob("*"))


def test_read_range_open_and_chunks_return_the_stored_bytes(tmp_path):
    store = FileBlobStore(tmp_path)
    data = bytes(range(256)) * 10
    writer = spool(store, data)
    store.commit([writer])
    assert store.read_range(writer.key, 100, 50) == data[100:150]
    with store.open(writer.key) as handle:
        assert handle.read() == data
    assert b"".join(store.iter_chunks(writer.key, chunk_size=7)) == data


def test_delete_removes_only_the_named_blobs(tmp_path):
    store = FileBlobStore(tmp_path)
    keep, drop = spool(store, b"keep"), spool(store, b"drop")
    store.commit([keep, drop])
    store.delete([drop.key, "0" * 64])  # an unknown key is no error
    assert store.exists(keep.key) and not store.exists(drop.key)


def test_a_key_is_only_known_once_the_blob_is_closed(tmp_path):
    writer = spool(FileBlobStore(tmp_path), b"open")
    with pytest.raises(RuntimeError):
        _ = writer.key


def test_opening_the_store_removes_uploads_a_dead_process_left(tmp_path):
    """DESIGN invariant 1: an upload never acknowledged (its process gone) leaves nothing behind."""
    FileBlobStore(tmp_path)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                               text=True, check=True)
    stale = tmp_path / "incoming" / f"{finished.stdout.strip()}-1-deadbeef"
    stale.write_bytes(b"half an upload")
    FileBlobStore(tmp_path)
    assert not stale.exists()


def test_opening_the_store_again_keeps_uploads_in_flight(tmp_path):
    """A second opening of the same data directory (another server process, or `oix org add`
    while the server runs) must not remove the spool files of uploads still being received."""
    store = FileBlobStore(tmp_path)
    writer = spool(store, b"arriving")
    FileBlobStore(tmp_path)
    writer.write(b" still")
    store.commit([writer])
    assert store.path_of(writer.key).read_bytes() == b"arriving still"


def test_removing_waits_for_stores_that_are_placing_blobs(tmp_path):
    """A removal never runs while a store has placed blobs it has not yet indexed."""
    store = FileBlobStore(tmp_path)
    placed, removal_done = threading.Event(), threading.Event()
    order = []

    def remove():
        placed.wait(timeout=10)
        with store.removing():
            order.append("removing")
        removal_done.set()

    remover = threading.Thread(target=remove)
    remover.start()
    with store.placing():
        placed.set()
        assert not removal_done.wait(timeout=0.5)  # held off while placing
        order.append("placed")
    assert removal_done.wait(timeout=10)
    remover.join(timeout=10)
    assert order == ["placed", "removing"]


def test_stores_place_blobs_side_by_side(tmp_path):
    """Placing is shared: two stores in flight do not wait for each other."""
    store = FileBlobStore(tmp_path)
    entered = threading.Event()

    def place():
        with store.placing():
            entered.set()

    with store.placing():
        other = threading.Thread(target=place)
        other.start()
        assert entered.wait(timeout=5)
    other.join(timeout=5)
