"""A short rolling window of recent clipboard texts, so code copied a few lines at a time is scanned whole.

Held in memory only (never written down), bounded by count, bytes and age, and owned by one
source thread.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RecentCopies:
    """The last few copied texts, oldest first; each ``add`` returns what came before it."""

    def __init__(self, *, max_count: int = 20, max_bytes: int = 256 << 10, max_age_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Keep at most ``max_count`` texts of ``max_bytes`` together, none older than ``max_age_s``.

        ``max_count`` 0 keeps nothing: ``add`` then always returns ``b""``.
        """
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._clock = clock
        self._texts: deque[tuple[float, bytes]] = deque()
        self._size = 0

    def add(self, text: bytes) -> bytes:
        """Remember ``text``; return the earlier texts still in the window, joined as they were copied.

        Nothing is put between them: a line copied in two halves is whole again, and a rule's string
        is found whether or not each copy ended its last line.

        A text larger than the whole window is not kept: it is scanned on its own.
        """
        now = self._clock()
        while self._texts and now - self._texts[0][0] > self._max_age_s:
            self._drop_oldest()
        earlier = b"".join(t for _, t in self._texts)
        if self._max_count == 0 or len(text) > self._max_bytes:
            return earlier
        self._texts.append((now, text))
        self._size += len(text)
        while len(self._texts) > self._max_count or self._size > self._max_bytes:
            self._drop_oldest()
        return earlier

    def clear(self) -> None:
        self._texts.clear()
        self._size = 0

    def _drop_oldest(self) -> None:
        _, text = self._texts.popleft()
        self._size -= len(text)

