"""Encryption at rest of blobs: the segmented AES-256-GCM format (round trips around segment
boundaries, range reads that decrypt only what they touch, every kind of tampering detected),
the encrypted blob store, and key rotation (NIST SP 800-38D; the STREAM construction)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from storage.blobs import FileBlobStore
from storage.content_key import content_key
from storage.encryption import (
    TAG_BYTES,
    BlobAuthenticationError,
    DecryptingReader,
    NotEncrypted,
    SegmentWriter,
    header_of,
    open_decrypting,
)
from storage.key_rotation import PLAINTEXT, rotate
from storage.keyring import Keyring, UnknownKey

SEGMENT = 1024  # small segments, so boundaries are cheap to cross


def keyring(*ids: str) -> Keyring:
    ids = ids or ("k1",)
    return Keyring({key_id: os.urandom(32) for key_id in ids}, ids[-1])


def encrypt(path: Path, ring: Keyring, data: bytes, chunk: int = 333) -> None:
    writer = SegmentWriter(path, ring, segment_size=SEGMENT)
    for start in range(0, len(data), chunk):
        writer.write(data[start:start + chunk])
    writer.close()


def decrypt(path: Path, ring: Keyring) -> bytes:
    with open_decrypting(path, ring) as handle:
        return handle.read()


SIZES = [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT, 7 * SEGMENT + 5]


@pytest.mark.parametrize("size", SIZES)
def test_a_blob_round_trips_at_every_size_around_segment_boundaries(tmp_path, size):
    ring, data = keyring(), os.urandom(size)
    encrypt(tmp_path / "blob", ring, data)
    assert decrypt(tmp_path / "blob", ring) == data
    segments = max(1, -(-size // SEGMENT))
    assert (tmp_path / "blob").stat().st_size == len(header_of(tmp_path / "blob").encode()) + size + segments * TAG_BYTES


def test_the_file_holds_no_plaintext(tmp_path):
    ring = keyring()
    data = b"DOE^JANE" * 1000
    encrypt(tmp_path / "blob", ring, data)
    assert b"DOE^JANE" not in (tmp_path / "blob").read_bytes()


def test_range_reads_across_segment_boundaries_return_the_plaintext(tmp_path):
    ring, data = keyring(), os.urandom(5 * SEGMENT + 17)
    encrypt(tmp_path / "blob", ring, data)
    with DecryptingReader(tmp_path / "blob", ring) as reader:
        assert reader.size == len(data)
        for offset, length in [(0, 1), (SEGMENT - 3, 6), (SEGMENT, SEGMENT), (2 * SEGMENT - 1, 2 * SEGMENT + 2),
                               (len(data) - 5, 100), (len(data), 10), (0, len(data))]:
            assert reader.read_range(offset, length) == data[offset:offset + length]


def test_seek_and_small_reads_behave_like_a_plain_file(tmp_path):
    ring, data = keyring(), os.urandom(3 * SEGMENT + 100)
    encrypt(tmp_path / "blob", ring, data)
    with open_decrypting(tmp_path / "blob", ring) as handle:
        assert handle.seek(0, 2) == len(data)
        handle.seek(SEGMENT - 2)
        assert handle.read(4) == data[SEGMENT - 2:SEGMENT + 2]
        assert handle.tell() == SEGMENT + 2
        handle.seek(-10, 2)
        assert handle.read() == data[-10:]
        assert handle.read(1) == b""


def test_a_range_read_decrypts_only_the_segments_it_touches(tmp_path):
    """Frames are read without decrypting the whole object: damage elsewhere goes unnoticed
    by a read that does not touch it (and is caught by one that does)."""
    ring, data = keyring(), os.urandom(6 * SEGMENT)
    path = tmp_path / "blob"
    encrypt(path, ring, data)
    header = len(header_of(path).encode())
    flip(path, header + 1 * (SEGMENT + TAG_BYTES) + 10)  # damage segment 1
    with DecryptingReader(path, ring) as reader:
        assert reader.read_range(3 * SEGMENT + 5, 2 * SEGMENT) == data[3 * SEGMENT + 5:5 * SEGMENT + 5]
        with pytest.raises(BlobAuthenticationError):
            reader.read_range(SEGMENT, 1)


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["header", "first segment", "last tag"])
def test_a_flipped_bit_anywhere_fails_authentication(tmp_path, where):
    ring, data = keyring(), os.urandom(3 * SEGMENT + 7)
    path = tmp_path / "blob"
    encrypt(path, ring, data)
    header = len(header_of(path).encode())
    offset = {"header": 12, "first segment": header + 5, "last tag": path.stat().st_size - 1}[where]
    flip(path, offset)
    with pytest.raises(BlobAuthenticationError):
        decrypt(path, ring)


def test_swapped_segments_fail_authentication(tmp_path):
    ring, data = keyring(), os.urandom(4 * SEGMENT)
    path = tmp_path / "blob"
    encrypt(path, ring, data)
    raw = path.read_bytes()
    header, stride = len(header_of(path).encode()), SEGMENT + TAG_BYTES
    first, second = raw[header:header + stride], raw[header + stride:header + 2 * stride]
    path.write_bytes(raw[:header] + second + first + raw[header + 2 * stride:])
    with pytest.raises(BlobAuthenticationError):
        decrypt(path, ring)


@pytest.mark.parametrize("cut", ["at a segment boundary", "inside a segment", "to the header"])
def test_a_truncated_blob_fails_authentication(tmp_path, cut):
    """The last segment is sealed as last: dropping whole segments is detected too."""
    ring, data = keyring(), os.urandom(4 * SEGMENT + 100)
    path = tmp_path / "blob"
    encrypt(path, ring, data)
    header, stride = len(header_of(path).encode()), SEGMENT + TAG_BYTES
    keep = {"at a segment boundary": header + 2 * stride, "inside a segment": header + 2 * stride + 50,
            "to the header": header}[cut]
    os.truncate(path, keep)
    with pytest.raises(BlobAuthenticationError):
        decrypt(path, ring)


def test_a_different_key_under_the_same_id_fails_authentication(tmp_path):
    path = tmp_path / "blob"
    encrypt(path, keyring("k1"), b"x" * 3000)
    with pytest.raises(BlobAuthenticationError):
        decrypt(path, keyring("k1"))


def test_a_key_id_missing_from_the_keyring_is_named(tmp_path):
    path = tmp_path / "blob"
    encrypt(path, keyring("gone"), b"data")
    with pytest.raises(UnknownKey, match="'gone'"):
        decrypt(path, keyring("k1"))


def test_a_plaintext_file_is_not_taken_for_an_encrypted_one(tmp_path):
    (tmp_path / "plain").write_bytes(b"\0" * 128 + b"DICM")
    with pytest.raises(NotEncrypted):
        header_of(tmp_path / "plain")


def test_each_blob_records_the_key_it_is_encrypted_under(tmp_path):
    old = keyring("k1")
    encrypt(tmp_path / "old", old, b"old bytes")
    new = Keyring({**old.keys, "k2": os.urandom(32)}, "k2")
    encrypt(tmp_path / "new", new, b"new bytes")
    assert header_of(tmp_path / "old").key_id == "k1"
    assert header_of(tmp_path / "new").key_id == "k2"
    assert decrypt(tmp_path / "old", new) == b"old bytes"  # old keys still read


def test_two_blobs_of_the_same_bytes_share_no_ciphertext(tmp_path):
    """Every blob has its own salt, so its own key: nonces never repeat under one key."""
    ring = keyring()
    encrypt(tmp_path / "a", ring, b"same" * 1000)
    encrypt(tmp_path / "b", ring, b"same" * 1000)
    a, b = (tmp_path / "a").read_bytes(), (tmp_path / "b").read_bytes()
    assert header_of(tmp_path / "a").salt != header_of(tmp_path / "b").salt
    assert a[len(header_of(tmp_path / "a").encode()):][:64] != b[len(header_of(tmp_path / "b").encode()):][:64]


# -- the encrypted blob store -------------------------------------------------------------------

def store_bytes(store: FileBlobStore, data: bytes) -> str:
    writer = store.new_writer()
    for start in range(0, len(data), 4096):
        writer.write(data[start:start + 4096])
    store.commit([writer])
    return writer.key


def test_an_encrypted_store_keys_blobs_by_the_plaintext_and_leaves_no_plaintext_on_disk(tmp_path):
    ring = keyring()
    store = FileBlobStore(tmp_path, ring)
    data = b"PATIENT^NAME" + os.urandom(200_000)
    writer = store.new_writer()
    writer.write(data)
    writer.close()
    assert b"PATIENT^NAME" not in writer.path.read_bytes()  # the spool file in incoming/ too
    store.commit([writer])
    assert writer.key == content_key(data)
    assert b"PATIENT^NAME" not in store.path_of(writer.key).read_bytes()
    with store.open(writer.key) as handle:
        assert handle.read() == data
    assert store.read_range(writer.key, 100_000, 70_000) == data[100_000:170_000]
    assert b"".join(store.iter_chunks(writer.key, chunk_size=9999)) == data


def test_a_store_without_keyring_writes_the_plain_bytes(tmp_path):
    store = FileBlobStore(tmp_path)
    key = store_bytes(store, b"plain DICM bytes")
    assert store.path_of(key).read_bytes() == b"plain DICM bytes"


# -- rotation -----------------------------------------------------------------------------------

def test_rotation_re_encrypts_every_blob_under_the_active_key(tmp_path):
    old = keyring("k1")
    contents = [os.urandom(size) for size in (0, 10, 70_000, 300_000)]
    keys = [store_bytes(FileBlobStore(tmp_path, old), data) for data in contents]
    new = Keyring({**old.keys, "k2": os.urandom(32)}, "k2")
    store = FileBlobStore(tmp_path, new)
    assert {header_of(store.path_of(key)).key_id for key in keys} == {"k1"}
    with store.open(keys[2]) as handle:  # before rotation, the old key still reads
        assert handle.read() == contents[2]

    report = rotate(store, new)
    assert report.rotated == {"k1": 4} and report.current == 0 and not report.failed
    assert {header_of(store.path_of(key)).key_id for key in keys} == {"k2"}
    only_new = Keyring({"k2": new.keys["k2"]}, "k2")
    for key, data in zip(keys, contents):
        with FileBlobStore(tmp_path, only_new).open(key) as handle:
            assert handle.read() == data
    again = rotate(store, new)
    assert sum(again.rotated.values()) == 0 and again.current == 4
    assert list((tmp_path / "incoming").iterdir()) == []


def test_rotation_encrypts_plaintext_blobs(tmp_path):
    key = store_bytes(FileBlobStore(tmp_path), b"DOE^JOHN plaintext")
    ring = keyring("k1")
    report = rotate(FileBlobStore(tmp_path, ring), ring)
    assert report.rotated == {PLAINTEXT: 1}
    assert b"DOE^JOHN" not in FileBlobStore(tmp_path).path_of(key).read_bytes()
    assert FileBlobStore(tmp_path, ring).read_range(key, 0, 100) == b"DOE^JOHN plaintext"


def test_rotation_checks_a_blob_stored_before_blake3_against_its_sha256_name(tmp_path):
    """Blobs stored before BLAKE3 named them keep their SHA-256 names (storage/content_key.py):
    rotation accepts either hash of the plaintext, and neither is still a damaged blob."""
    store = FileBlobStore(tmp_path)
    older, misnamed = b"DOE^JANE stored in November", b"bytes under another blob's name"
    older_key, misnamed_key = hashlib.sha256(older).hexdigest(), hashlib.sha256(b"other").hexdigest()
    for key, data in ((older_key, older), (misnamed_key, misnamed)):
        store.path_of(key).parent.mkdir(parents=True, exist_ok=True)
        store.path_of(key).write_bytes(data)
    ring = keyring("k1")
    report = rotate(FileBlobStore(tmp_path, ring), ring)
    assert report.rotated == {PLAINTEXT: 1} and list(report.failed) == [misnamed_key]
    assert FileBlobStore(tmp_path, ring).read_range(older_key, 0, 100) == older


def test_rotation_leaves_a_damaged_blob_as_it_is_and_says_so(tmp_path):
    ring = keyring("k1")
    store = FileBlobStore(tmp_path, ring)
    key = store_bytes(store, os.urandom(5000))
    flip(store.path_of(key), store.path_of(key).stat().st_size - 1)
    damaged = store.path_of(key).read_bytes()
    new = Keyring({**ring.keys, "k2": os.urandom(32)}, "k2")
    report = rotate(FileBlobStore(tmp_path, new), new)
    assert list(report.failed) == [key] and report.left_under == {"k1"}
    assert store.path_of(key).read_bytes() == damaged
