"""The immutable blob store for DICOM Part 10 objects: content-addressed (storage/content_key.py), so the
same bytes held for two organisations are stored once, and durable before anyone is told.
With a keyring, every file it writes (spooled uploads too) is encrypted (storage/encryption.py)."""

from __future__ import annotations

import ctypes
import fcntl
import itertools
import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from storage.content_key import former_key, new_hasher
from storage.direct_file import DirectFile
from storage.encryption import DecryptingReader, SegmentWriter, open_decrypting
from storage.file_lock import file_lock
from storage.keyring import Keyring


class BlobWriter(Protocol):
    """Receives one object's bytes as they arrive; knows its key once closed."""

    path: Path
    size: int
    keyring: Keyring | None  # what the spooled file is encrypted under (None: plaintext)
    pending_bytes: int  # held in memory, not yet in the file

    def write(self, chunk: bytes) -> None: ...
    def buffer(self, chunk: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    @property
    def key(self) -> str: ...
    def discard(self) -> None: ...


class BlobStore(Protocol):
    """What the exchange needs of a blob store; the filesystem is the embedded default."""

    def new_writer(self) -> BlobWriter: ...
    def commit(self, writers: list[BlobWriter]) -> None: ...
    def open(self, key: str) -> BinaryIO: ...
    def read_range(self, key: str, offset: int, length: int) -> bytes: ...
    def delete(self, keys: Iterable[str]) -> None: ...
    def exists(self, key: str) -> bool: ...
    def same_bytes(self, held: str, key: str) -> bool: ...
    def placing(self) -> AbstractContextManager[None]: ...
    def removing(self) -> AbstractContextManager[None]: ...


class SpooledBlob:
    """A blob being received into a temporary file in the store (encrypted as it arrives when
    there is a keyring), its plaintext hashed on the way.

    Bytes are first held in memory: `write` passes them on to the file once `FLUSH_BYTES` have
    gathered; `buffer` only holds them, and `flush` (or `close`) writes them out. So a caller
    on an event loop can receive into memory and leave every filesystem call, the file's
    creation included, to a worker thread (dicomweb/stow.py)."""

    FLUSH_BYTES = 1 << 20

    def __init__(self, path: Path, keyring: Keyring | None = None):
        self.path = path
        self.size = 0
        self.keyring = keyring
        self.pending_bytes = 0
        self._pending: list[bytes] = []
        self._hash = new_hasher()
        self._file: DirectFile | SegmentWriter | None = None
        self._key: str | None = None

    def buffer(self, chunk: bytes) -> None:
        if self._key is not None:
            raise RuntimeError("the blob is closed")
        self._pending.append(chunk)
        self.pending_bytes += len(chunk)
        self.size += len(chunk)

    def write(self, chunk: bytes) -> None:
        self.buffer(chunk)
        if self.pending_bytes >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write what is held in memory to the file, creating it on the first call."""
        if self._file is None:
            self._file = DirectFile(self.path) if self.keyring is None \
                else SegmentWriter(self.path, self.keyring)
        for chunk in self._pending:
            self._hash.update(chunk)
        self._file.writelines(self._pending)
        self._pending.clear()
        self.pending_bytes = 0

    def close(self) -> None:
        if self._key is None:
            self.flush()
            self._file.close()
            self._key = self._hash.hexdigest()

    @property
    def key(self) -> str:
        if self._key is None:
            raise RuntimeError("the blob is still being written")
        return self._key

    def discard(self) -> None:
        self._pending.clear()
        if self._file is not None and not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class FileBlobStore:
    """Blobs as files under `root/blobs/ab/cdef…`, received under `root/incoming/`.

    Commit order (DESIGN invariant 1): every file of a request is renamed into place, then one
    filesystem sync makes all of them durable together (instead of one fsync after another),
    and only then may the caller commit the index and acknowledge.

    The key is the hash of the plaintext, encrypted or not, so encryption changes neither keys
    nor deduplication."""

    def __init__(self, root: Path, keyring: Keyring | None = None):
        self.root = root
        self.keyring = keyring
        self.blob_dir = root / "blobs"
        self.incoming = root / "incoming"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)
        for stale in self.incoming.iterdir():  # never acknowledged: a crash mid-request left them
            if not _receiver_running(stale.name):  # not another process's upload in flight
                stale.unlink(missing_ok=True)
        self._counter = itertools.count(1)  # next() is atomic: writers are made on many threads
        self._directories: set[str] = set()  # fan-out folders known to exist

    def new_writer(self) -> SpooledBlob:
        name = f"{os.getpid()}-{next(self._counter)}-{os.urandom(4).hex()}"
        return SpooledBlob(self.incoming / name, self.keyring)

    def path_of(self, key: str) -> Path:
        return Path(self._folder_of(key), key)

    def _folder_of(self, key: str) -> str:
        # A string, not a Path: a request places every one of its objects here.
        return f"{self.blob_dir}/{key[:2]}/{key[2:4]}"

    def commit(self, writers: list[BlobWriter]) -> None:
        # Always replace: an existing file of the same name may be a leftover of a crash before
        # its sync, so it is never trusted; the new bytes are identical by construction.
        placed = []
        for writer in writers:
            writer.close()
            folder = self._folder_of(writer.key)
            if folder not in self._directories:
                os.makedirs(folder, exist_ok=True)
                self._directories.add(folder)
            target = f"{folder}/{writer.key}"
            os.replace(writer.path, target)
            placed.append(target)
        sync_filesystem(self.root, placed)

    def open(self, key: str) -> BinaryIO:
        return open_blob_file(self.path_of(key), self.keyring)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        if self.keyring is not None:
            with DecryptingReader(self.path_of(key), self.keyring) as reader:
                return reader.read_range(offset, length)
        with open(self.path_of(key), "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    def exists(self, key: str) -> bool:
        return self.path_of(key).exists()

    def same_bytes(self, held: str, key: str) -> bool:
        """Whether `held`, another blob's name, is the name blob `key`'s bytes had before BLAKE3
        (storage/content_key.py): read only when an object comes again under a held UID."""
        return held != key and former_key(self.iter_chunks(key)) == held

    # The same bytes may arrive twice: a removal must never unlink a blob that a store in flight
    # has placed but not yet indexed. Stores share this lock, removals take it alone; flock(2)
    # makes that hold across threads and across server processes on one data directory.

    @contextmanager
    def placing(self) -> Iterator[None]:
        with file_lock(self.root / "blobs.lock", fcntl.LOCK_SH):
            yield

    @contextmanager
    def removing(self) -> Iterator[None]:
        with file_lock(self.root / "blobs.lock", fcntl.LOCK_EX):
            yield

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.path_of(key).unlink(missing_ok=True)

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with self.open(key) as handle:
            while chunk := handle.read(chunk_size):
                yield chunk


def open_blob_file(path: Path | str, keyring: Keyring | None) -> BinaryIO:
    """A stored or spooled blob's plaintext, as a seekable binary file."""
    return open(path, "rb") if keyring is None else open_decrypting(Path(path), keyring)


def _receiver_running(name: str) -> bool:
    """Whether the process that is receiving an incoming file (named `<pid>-…`) still runs: a
    second server, or `oix org add`, on the same data directory keeps its uploads."""
    pid = name.split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_libc = None


def sync_filesystem(root: Path, placed: list[str] | list[Path]) -> None:
    """Make renamed files durable together: syncfs(2) on Linux flushes the files and their
    directory entries in one call; elsewhere, fsync each file and its directory."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.syncfs  # noqa: B018 - probe that the symbol exists
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        fd = os.open(root, os.O_RDONLY)
        try:
            if _libc.syncfs(fd) != 0:
                raise OSError(ctypes.get_errno(), "syncfs failed")
        finally:
            os.close(fd)
        return
    for path in placed:  # pragma: no cover - non-Linux
        for target in (path, os.path.dirname(path)):
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
