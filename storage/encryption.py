"""The encrypted blob format: AES-256-GCM over fixed-size, independently authenticated segments,
so a frame is read by decrypting the few segments it lies in, never the whole object.

    header   "OIXENC" | version (1) | segment size (u32 BE) | salt (32) | key id length (1) | key id
    segment  AES-GCM(plaintext of `segment size` bytes, the last one shorter) | 16-byte tag

This is the STREAM construction (Hoang, Reyhanitabar, Rogaway and Vizár, CRYPTO 2015, as in
Tink's streaming AEAD): every blob has its own key, HKDF(master key, salt) with a fresh random
salt, so the 96-bit nonce can be a plain counter: segment index (u64 BE) | 3 zero bytes | a
last-segment flag. Nonces then never repeat under one key, which GCM's security rests on
(NIST SP 800-38D section 8), however many blobs a master key encrypts. The header is the
additional authenticated data of every segment. Swapping segments changes their nonce,
cutting the file short leaves a last segment sealed as "not last", and a wrong key or a flipped
bit fails the tag: each raises BlobAuthenticationError. An empty blob is one empty last segment.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.keyring import EncryptionError, Keyring, derive_key

MAGIC = b"OIXENC"
VERSION = 1
SEGMENT_SIZE = 64 << 10  # a 512 x 512 x 16-bit frame spans 8 or 9 segments
MAX_SEGMENT_SIZE = 16 << 20
TAG_BYTES = 16
SALT_BYTES = 32
_FIXED = struct.Struct(">6sBI32sB")  # magic, version, segment size, salt, key id length
_NONCE = struct.Struct(">Q3xB")  # segment index, zero padding, last-segment flag
BLOB_KEY_PURPOSE = "oix-blob"


class BlobAuthenticationError(EncryptionError):
    """The encrypted bytes are not what was written under that key: tampered, reordered,
    truncated, or read with a different key of the same id."""


class NotEncrypted(EncryptionError):
    """The file does not start with the encrypted blob header: it holds plaintext."""


@dataclass(frozen=True)
class Header:
    key_id: str
    salt: bytes
    segment_size: int

    def encode(self) -> bytes:
        key_id = self.key_id.encode("ascii")
        return _FIXED.pack(MAGIC, VERSION, self.segment_size, self.salt, len(key_id)) + key_id

    @classmethod
    def read(cls, fd: int) -> Header:
        fixed = os.pread(fd, _FIXED.size, 0)
        if len(fixed) < _FIXED.size or not fixed.startswith(MAGIC):
            raise NotEncrypted("no encrypted blob header")
        _magic, version, segment_size, salt, id_length = _FIXED.unpack(fixed)
        if version != VERSION:
            raise EncryptionError(f"encrypted blob format version {version} is not one this server reads")
        if not 0 < segment_size <= MAX_SEGMENT_SIZE:
            raise BlobAuthenticationError(f"implausible segment size {segment_size} in the blob header")
        key_id = os.pread(fd, id_length, _FIXED.size)
        if len(key_id) != id_length:
            raise BlobAuthenticationError("the blob header is cut short")
        return cls(key_id.decode("ascii", "replace"), salt, segment_size)


def header_of(path: Path) -> Header:
    """The header of a stored file (NotEncrypted if it holds plaintext)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return Header.read(fd)
    finally:
        os.close(fd)


class SegmentWriter:
    """Encrypts a blob into `path` as its bytes arrive, under the keyring's active key. One
    segment is held back until more bytes or `close` tell whether it is the last."""

    def __init__(self, path: Path, keyring: Keyring, segment_size: int = SEGMENT_SIZE):
        self.header = Header(keyring.active_id, os.urandom(SALT_BYTES), segment_size)
        self._aad = self.header.encode()
        self._cipher = AESGCM(derive_key(keyring.active_key, BLOB_KEY_PURPOSE, self.header.salt))
        self._pending = bytearray()
        self._index = 0
        self._file = open(path, "wb")
        self._file.write(self._aad)

    def write(self, chunk: bytes) -> None:
        pending = self._pending
        pending += chunk
        size = self.header.segment_size
        if len(pending) <= size:
            return
        count = (len(pending) - 1) // size  # keep 1..size bytes back: they may be the last
        with memoryview(pending) as view:
            sealed = [self._seal(view[i * size:(i + 1) * size], last=False) for i in range(count)]
        del pending[:count * size]
        self._file.write(b"".join(sealed))

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.write(self._seal(self._pending, last=True))
        self._pending = bytearray()
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def _seal(self, plaintext, last: bool) -> bytes:
        sealed = self._cipher.encrypt(_NONCE.pack(self._index, last), plaintext, self._aad)
        self._index += 1
        return sealed


class DecryptingReader(io.RawIOBase):
    """A seekable, read-only view of an encrypted blob's plaintext that decrypts only the
    segments a read touches. The last segment is authenticated on opening, so `size` (and the
    end of every read) can be trusted; each other segment when first read."""

    def __init__(self, path: Path, keyring: Keyring):
        self.name = str(path)  # as a file object has: readers such as pydicom's name their source by it
        self._fd = -1
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self.header = Header.read(self._fd)
            self._aad = self.header.encode()
            key = keyring.key(self.header.key_id)
            self._cipher = AESGCM(derive_key(key, BLOB_KEY_PURPOSE, self.header.salt))
            self.segment_size = self.header.segment_size
            self._stride = self.segment_size + TAG_BYTES
            sealed = os.fstat(self._fd).st_size - len(self._aad)
            self._count = max(1, -(-sealed // self._stride))
            last_sealed = sealed - (self._count - 1) * self._stride
            if last_sealed < TAG_BYTES or (self._count > 1 and last_sealed == TAG_BYTES):
                raise BlobAuthenticationError(f"encrypted blob {path} is cut short")
            self.size = sealed - self._count * TAG_BYTES
            self._cached: tuple[int, bytes] = (-1, b"")
            self._last = self._decrypt(self._count - 1)
        except BaseException:
            self.close()
            raise
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer) -> int:
        data = self.read_range(self._position, len(buffer))
        memoryview(buffer).cast("B")[:len(data)] = data
        self._position += len(data)
        return len(data)

    def readall(self) -> bytes:
        data = self.read_range(self._position, max(0, self.size - self._position))
        self._position += len(data)
        return data

    def read_range(self, offset: int, length: int) -> bytes:
        """Up to `length` plaintext bytes from `offset`, decrypting only the segments they lie in."""
        end = min(offset + length, self.size)
        pieces = []
        while offset < end:
            index, within = divmod(offset, self.segment_size)
            plaintext = memoryview(self._segment(index))[within:within + end - offset]
            pieces.append(plaintext)
            offset += len(plaintext)
        return b"".join(pieces)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        super().close()

    def _segment(self, index: int) -> bytes:
        if index == self._count - 1:
            return self._last
        if self._cached[0] != index:
            self._cached = (index, self._decrypt(index))
        return self._cached[1]

    def _decrypt(self, index: int) -> bytes:
        sealed = os.pread(self._fd, self._stride, len(self._aad) + index * self._stride)
        try:
            return self._cipher.decrypt(_NONCE.pack(index, index == self._count - 1), sealed, self._aad)
        except InvalidTag:
            raise BlobAuthenticationError(
                f"segment {index} of an encrypted blob under key '{self.header.key_id}' fails authentication "
                "(tampered, reordered, truncated, or a different key under that id)") from None


def open_decrypting(path: Path, keyring: Keyring) -> io.BufferedReader:
    """An encrypted blob's plaintext as a buffered binary file: small reads (pydicom reading a
    header element by element) are served from the buffer of one segment."""
    raw = DecryptingReader(path, keyring)
    return io.BufferedReader(raw, buffer_size=raw.segment_size)
