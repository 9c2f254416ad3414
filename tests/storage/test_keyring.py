"""The keyring of encryption at rest: key files (last key active, owner-only), a key in the
environment, new keys appended, keys derived per purpose, and keys added to the file after
start found when first needed."""

from __future__ import annotations

import base64
import os
import pickle

import pytest

from storage.keyring import Keyring, KeyringError, UnknownKey, append_new_key, derive_key, environment_key_id


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def key_file(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "keys"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_encryption_is_off_without_a_key():
    assert Keyring.load(None, None) is None


def test_the_last_key_of_the_file_is_active(tmp_path):
    first, second = os.urandom(32), os.urandom(32)
    ring = Keyring.load(key_file(tmp_path, f"# comment\nold {b64(first)}\n\nnew {b64(second)}\n"), None)
    assert ring.active_id == "new" and ring.active_key == second
    assert ring.key("old") == first


def test_a_key_in_the_environment_gets_an_id_from_its_hash():
    key = os.urandom(32)
    ring = Keyring.load(None, b64(key))
    assert ring.active_id == environment_key_id(key) and ring.active_id.startswith("env-")
    assert ring.active_key == key


def test_beside_a_key_file_the_environment_key_stays_readable_but_not_active(tmp_path):
    env_key, file_key = os.urandom(32), os.urandom(32)
    ring = Keyring.load(key_file(tmp_path, f"k1 {b64(file_key)}\n"), b64(env_key))
    assert ring.active_id == "k1"
    assert ring.key(environment_key_id(env_key)) == env_key


@pytest.mark.parametrize("text, message", [
    ("", "holds no key"),
    ("k1\n", "expected 'key-id base64-key'"),
    ("bad/id AAAA\n", "expected 'key-id base64-key'"),
    ("k1 not-base64!\n", "not base64"),
    (f"k1 {b64(b'short')}\n", "AES-256 needs 32"),
    (f"k1 {b64(b'a' * 32)}\nk1 {b64(b'b' * 32)}\n", "names two different keys"),
])
def test_a_malformed_key_file_is_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(KeyringError, match=message):
        Keyring.load(key_file(tmp_path, text), None)


def test_a_key_file_others_may_read_is_refused(tmp_path):
    with pytest.raises(KeyringError, match="chmod 600"):
        Keyring.load(key_file(tmp_path, f"k1 {b64(os.urandom(32))}\n", mode=0o640), None)


def test_generate_appends_an_owner_only_key_that_becomes_active(tmp_path):
    path = tmp_path / "keys"
    first = append_new_key(path)
    second = append_new_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    ring = Keyring.load(path, None)
    assert ring.active_id == second and set(ring.keys) == {first, second}


def test_a_key_added_to_the_file_after_loading_is_found_and_the_active_key_kept(tmp_path):
    """A running server meets blobs that `oix keys rotate` re-encrypted under a newer key."""
    path = tmp_path / "keys"
    first = append_new_key(path)
    ring = Keyring.load(path, None)
    second = append_new_key(path)
    assert len(ring.key(second)) == 32
    assert ring.active_id == first
    with pytest.raises(UnknownKey):
        ring.key("never-made")


def test_derived_keys_differ_per_purpose_and_salt():
    key = os.urandom(32)
    assert len({derive_key(key, "oix-index"), derive_key(key, "oix-blob", b"a"), derive_key(key, "oix-blob", b"b"),
                key}) == 4


def test_a_keyring_survives_pickling_for_parser_processes_and_never_shows_its_keys(tmp_path):
    path = tmp_path / "keys"
    append_new_key(path)
    ring = Keyring.load(path, None)
    copy = pickle.loads(pickle.dumps(ring))
    assert copy.keys == ring.keys and copy.active_id == ring.active_id
    assert b64(ring.active_key) not in repr(ring)
