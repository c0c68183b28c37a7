"""Keyset-paging cursors for the event list: a position in one sort order, opaque to callers."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from server.errors import InvalidInput

# seq is a BIGINT: a cursor beyond it was never issued, and both databases refuse to compare with it.
_MAX_SEQ = 2**63 - 1
SORTS = ("newest", "oldest", "severity")
"""newest: arrival order, latest first (the API's order); oldest: the reverse; severity: highest first, then newest."""
_SORT_TAGS = {"newest": "s", "oldest": "o", "severity": "r"}
_CURSOR_TEXT = re.compile(r"(p?)([sor])(?:([0-9]):)?([0-9]{1,19})")


@dataclass(frozen=True)
class Cursor:
    """A position in one sort order: the sort key of an item, and which side of it to read.

    Encoded as URL-safe base64 of ``[p]<tag>[<rank>:]<seq>``; ``p`` marks "the page before".
    The newest-first forward cursor is ``s<seq>``, the form the review API has always returned.
    """

    sort: str
    seq: int
    rank: int | None = None
    backward: bool = False

    def encode(self) -> str:
        rank = f"{self.rank}:" if self.sort == "severity" else ""
        raw = f"{'p' if self.backward else ''}{_SORT_TAGS[self.sort]}{rank}{self.seq}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
            found = _CURSOR_TEXT.fullmatch(raw)
            if found is None:
                raise ValueError
            back, tag, rank, seq = found.groups()
            sort = next(name for name, t in _SORT_TAGS.items() if t == tag)
            if (rank is None) != (sort != "severity") or int(seq) > _MAX_SEQ:
                raise ValueError
            cursor = cls(sort, int(seq), int(rank) if rank is not None else None, bool(back))
            # base64 decoding skips junk and padding, so only the exact spelling we issue is one we returned.
            if cursor.encode() != text:
                raise ValueError
            return cursor
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidInput("cursor is not one this collector returned") from None
