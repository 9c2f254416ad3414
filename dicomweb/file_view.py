"""A bytes-like, read-only view of a seekable binary file that cannot be memory-mapped (an
encrypted blob): random access through a few cached blocks, so the header reader can walk a
large object without holding it in memory (DESIGN invariant 4)."""

from __future__ import annotations

from collections import OrderedDict
from typing import BinaryIO

BLOCK_SIZE = 64 << 10  # one segment of an encrypted blob: a block costs one decryption
CACHED_BLOCKS = 8


class FileView:
    """`view[i]` and `view[a:b]` (bytes) of the file's bytes, read on demand. It is no buffer:
    unpack from a slice of it, not with `struct.unpack_from`."""

    def __init__(self, handle: BinaryIO, size: int, block_size: int = BLOCK_SIZE):
        self._handle = handle
        self._size = size
        self._block_size = block_size
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: int | slice) -> int | bytes:
        if isinstance(key, int):
            index = key + self._size if key < 0 else key
            if not 0 <= index < self._size:
                raise IndexError("FileView index out of range")
            block, within = divmod(index, self._block_size)
            return self._block(block)[within]
        start, stop, step = key.indices(self._size)
        if step != 1:
            raise ValueError("FileView slices take no step")
        pieces = []
        while start < stop:
            block, within = divmod(start, self._block_size)
            piece = self._block(block)[within:within + stop - start]
            pieces.append(piece)
            start += len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)  # b"" when empty

    def _block(self, index: int) -> bytes:
        found = self._blocks.get(index)
        if found is not None:
            self._blocks.move_to_end(index)
            return found
        self._handle.seek(index * self._block_size)
        found = self._handle.read(self._block_size)
        if not found:
            raise IndexError(f"the file ends before byte {index * self._block_size}")
        self._blocks[index] = found
        if len(self._blocks) > CACHED_BLOCKS:
            self._blocks.popitem(last=False)
        return found
