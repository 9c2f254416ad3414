"""The keys of encryption at rest: a key id -> 256-bit key map with one active key, loaded
from a key file (`key-id base64-key` per line, the last line active) or one key in the
environment, and the keys derived from them for one purpose each (HKDF, RFC 5869)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32  # AES-256
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class EncryptionError(Exception):
    """Base of every failure of encryption at rest; its message says what to do."""


class KeyringError(EncryptionError):
    """The key file or key variable cannot be used as it is."""


class UnknownKey(EncryptionError):
    """Data is encrypted under a key id the keyring does not hold."""

    def __init__(self, key_id: str):
        super().__init__(f"encryption key '{key_id}' is not in the keyring: add it back to the key file")
        self.key_id = key_id


@dataclass(repr=False, eq=False)
class Keyring:
    """Key id -> key, and the active key id new data is encrypted under. A keyring read from a
    file reads it again when asked for a key id it does not hold: `oix keys rotate` may have
    re-encrypted blobs under a key added after this process started."""

    keys: dict[str, bytes]
    active_id: str
    path: Path | None = None
    extra: dict[str, bytes] = field(default_factory=dict)  # the environment's key, beside a file
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __repr__(self) -> str:  # never the keys themselves, in a log or a traceback
        return f"Keyring(active={self.active_id!r}, ids={sorted(self.keys)!r})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    @classmethod
    def load(cls, key_file: Path | None, environment_key: str | None) -> Keyring | None:
        """The configured keyring, or None when encryption at rest is off. With both a key file
        and a key in the environment, the file's last key is active and the environment's key
        stays readable (the way from an environment key to a key file)."""
        extra = {}
        if environment_key:
            key = _decode_key(environment_key.strip(), "OIX_ENCRYPTION_KEY")
            extra[environment_key_id(key)] = key
        if key_file is None:
            if not extra:
                return None
            [(key_id, key)] = extra.items()
            return cls({key_id: key}, key_id)
        keys, active = read_key_file(key_file)
        return cls({**extra, **keys}, active, key_file, extra)

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active_id]

    def key(self, key_id: str) -> bytes:
        found = self.keys.get(key_id)
        if found is None and self.path is not None:
            with self._lock:
                keys, _active = read_key_file(self.path)
                self.keys = {**self.extra, **keys}  # the active key stays the one this process began with
            found = self.keys.get(key_id)
        if found is None:
            raise UnknownKey(key_id)
        return found


def derive_key(key: bytes, purpose: str, salt: bytes | None = None) -> bytes:
    """A 256-bit key for one purpose only (HKDF-SHA256, RFC 5869): the key of one blob, of the
    index, or a check value; never the master key itself."""
    return HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=salt, info=purpose.encode()).derive(key)


def key_check(key: bytes) -> str:
    """A public fingerprint that tells whether a key id still names the same key bytes."""
    return derive_key(key, "oix-key-check")[:8].hex()


def environment_key_id(key: bytes) -> str:
    return "env-" + hashlib.sha256(b"oix key id\0" + key).hexdigest()[:16]


def read_key_file(path: Path) -> tuple[dict[str, bytes], str]:
    """Keys of a key file, and the id of its last (active) key. A file that others than its
    owner may read is refused, as ssh refuses such a private key."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        raise KeyringError(f"cannot read the encryption key file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise KeyringError(f"the encryption key file {path} is not 'key-id base64-key' lines") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyringError(f"the encryption key file {path} is readable by other users: chmod 600 {path}")
    keys: dict[str, bytes] = {}
    active = None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not KEY_ID.fullmatch(parts[0]):
            raise KeyringError(f"{path} line {number}: expected 'key-id base64-key' "
                               "(key id of letters, digits, '.', '_' or '-')")
        key_id, key = parts[0], _decode_key(parts[1], f"{path} line {number}")
        if key_id in keys and keys[key_id] != key:
            raise KeyringError(f"{path} line {number}: key id '{key_id}' names two different keys")
        keys[key_id] = key
        active = key_id
    if active is None:
        raise KeyringError(f"the encryption key file {path} holds no key: run `oix keys generate --file {path}`")
    return keys, active


def append_new_key(path: Path) -> str:
    """Append a new random key to a key file (made with mode 0600 if new); it becomes active."""
    if path.exists():
        keys, _active = read_key_file(path)
    else:
        keys = {}
    key_id = f"k{len(keys) + 1}-{secrets.token_hex(4)}"
    line = f"{key_id} {base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size and not path.read_bytes().endswith(b"\n"):
            line = "\n" + line
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return key_id


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyringError(f"{where}: the key is not base64") from exc
    if len(key) != KEY_BYTES:
        raise KeyringError(f"{where}: the key is {len(key)} bytes; AES-256 needs {KEY_BYTES} "
                           "(make one with `oix keys generate`)")
    return key
