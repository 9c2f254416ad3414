"""A new file written past its first bytes straight to the disk (O_DIRECT, open(2)), not through
the page cache.

A blob is written once and synced before it is acknowledged, so the page cache only costs on the
way in: every byte is copied into pages taken from free memory, and on a virtual machine whose
host takes freed memory back (free page reporting, as here) each of those pages is first touched
at the host's expense. Storing 512×512 instances at 8 clients, that copy took 22–32 % of both
cores (perf; bench/README). Written directly, the bytes go to the device from one reused buffer.

The first `CACHED_HEAD` bytes still go through the page cache: they hold the DICOM header, which
the parser reads right after (dicomweb/part10.py). The last partial block does too, because
direct I/O moves whole blocks. Where the filesystem refuses direct I/O (EINVAL), the file is
written through the page cache as any other.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from collections.abc import Iterable
from pathlib import Path

# Direct I/O needs the buffer's address, the length and the file offset aligned to the device's
# logical block size: 512 or 4096 bytes on Linux block devices.
BLOCK = 4096
CACHED_HEAD = 16 << 10  # a multiple of BLOCK; headers of CT and MR images are a few KiB
BUFFER_BYTES = 1 << 20
KEPT_BUFFERS = 8  # idle aligned buffers kept for the next writes; more are unmapped

_buffers: list[mmap.mmap] = []
_buffers_lock = threading.Lock()


def _take_buffer() -> mmap.mmap:
    with _buffers_lock:
        if _buffers:
            return _buffers.pop()
    return mmap.mmap(-1, BUFFER_BYTES)  # anonymous maps are page-aligned


def _give_back(buffer: mmap.mmap) -> None:
    with _buffers_lock:
        if len(_buffers) < KEPT_BUFFERS:
            _buffers.append(buffer)
            return
    buffer.close()


class DirectFile:
    """A file created at `path` (which must not exist), written with `writelines` and `close`."""

    def __init__(self, path: Path | str):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        self._offset = 0
        self._direct = False
        self._refused = False  # the filesystem would not take direct I/O
        self._tail = b""  # bytes past the last whole block, not yet written
        self.closed = False

    def writelines(self, chunks: Iterable[bytes]) -> None:
        pending: list[memoryview | bytes] = [self._tail] if self._tail else []
        for chunk in chunks:
            view = memoryview(chunk)
            if self._offset < CACHED_HEAD:
                head = view[:CACHED_HEAD - self._offset]
                self._write_through_cache(head)
                view = view[len(head):]
            if len(view):
                pending.append(view)
        self._tail = b""
        if pending:
            self._write_blocks(pending)

    def _write_blocks(self, pending: list[memoryview | bytes]) -> None:
        """Write every whole block of `pending` directly and keep the rest as the tail."""
        if self._refused:
            for piece in pending:
                self._write_through_cache(piece)
            return
        buffer = _take_buffer()
        try:
            with memoryview(buffer) as space:
                used = 0
                for piece in pending:
                    piece = memoryview(piece)
                    while len(piece):
                        take = min(len(piece), BUFFER_BYTES - used)
                        space[used:used + take] = piece[:take]
                        used += take
                        piece = piece[take:]
                        if used == BUFFER_BYTES:
                            self._write_direct(space[:used])
                            used = 0
                whole = used - used % BLOCK
                if whole:
                    self._write_direct(space[:whole])
                self._tail = bytes(space[whole:used])
        finally:
            _give_back(buffer)

    def _write_direct(self, data: memoryview) -> None:
        if not self._direct and not self._refused:
            self._set_direct(True)
        self._write(data)

    def _write_through_cache(self, data: memoryview | bytes) -> None:
        if self._direct:
            self._set_direct(False)
        self._write(data)

    def _write(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        while len(view):
            try:
                written = os.write(self._fd, view)
            except OSError as error:
                if not (self._direct and error.errno == errno.EINVAL):
                    raise
                # The device wants a larger alignment, or a short write left the offset
                # unaligned: the rest goes through the page cache.
                self._refused = True
                self._set_direct(False)
                continue
            self._offset += written
            view = view[written:]

    def _set_direct(self, on: bool) -> None:
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
        except OSError as error:
            if not on or error.errno != errno.EINVAL:
                raise
            self._refused = True  # e.g. a filesystem without direct I/O
            return
        self._direct = on

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._tail:
                self._write_through_cache(self._tail)
                self._tail = b""
        finally:
            self.closed = True
            os.close(self._fd)
