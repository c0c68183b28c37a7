"""Scan results by content, so identical bytes are scanned once per ruleset."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

import cachetools

T = TypeVar("T")


class ResultCache(Generic[T]):
    """A thread-safe LRU map from (sha256, ruleset version, ...) to a scan outcome.

    The key carries the ruleset version, so a new ruleset never reuses a verdict
    of the old one; stale entries simply age out.
    """

    def __init__(self, max_entries: int = 50_000):
        self._entries: cachetools.LRUCache[Hashable, T] = cachetools.LRUCache(maxsize=max_entries)
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
            return value

    def put(self, key: Hashable, value: T) -> None:
        with self._lock:
            self._entries[key] = value

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
