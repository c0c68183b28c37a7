"""Scan results by content, so identical bytes are scanned once per ruleset."""

from __future__ import annotations

import collections
import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class ResultCache(Generic[T]):
    """A thread-safe LRU map from (sha256, ruleset version, ...) to a scan outcome.

    The key carries the ruleset version, so a new ruleset never reuses a verdict
    of the old one; stale entries simply age out.
    """

    def __init__(self, max_entries: int = 50_000):
        # An OrderedDict in least-recently-used order: its moves are C calls, where cachetools'
        # LRUCache ran Python on every get and put (2 us a scanned file) and cost 2 ms to import.
        self._entries: collections.OrderedDict[Hashable, T] = collections.OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> T | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: T) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
