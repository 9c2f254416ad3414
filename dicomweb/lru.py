"""A cache bounded in bytes, least recently used out first. Used from the event loop only, so
it needs no lock."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LruCache(Generic[V]):
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self.size = 0

    def get(self, key: Hashable) -> V | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.entries.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: V, size: int) -> None:
        """Keep `value` (of `size` bytes) under `key`, replacing what was there. A value above a
        sixteenth of the bound is not kept: one would evict many."""
        self.discard(key)
        if size > self.max_bytes // 16:
            return
        self.entries[key] = (value, size)
        self.size += size
        while self.size > self.max_bytes:
            _, (_, evicted) = self.entries.popitem(last=False)
            self.size -= evicted

    def discard(self, key: Hashable) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.size -= entry[1]
