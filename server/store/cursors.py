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


def encode_text(raw: str) -> str:
    """An opaque cursor of ``raw``: URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode().rstrip("=")


def decode_text(text: str) -> str:
    """The ASCII text of a cursor ``encode_text`` made; ValueError for anything else.

    Strict: characters outside the URL-safe alphabet are refused rather than skipped (callers
    still compare the re-encoded cursor with ``text``, so only the exact spelling issued passes).
    Shared by the event list's cursors and the case list's (server/store/case_cursors.py).
    """
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise ValueError("not a cursor") from error


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
        return encode_text(f"{'p' if self.backward else ''}{_SORT_TAGS[self.sort]}{rank}{self.seq}")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            found = _CURSOR_TEXT.fullmatch(decode_text(text))
            if found is None:
                raise ValueError
            back, tag, rank, seq = found.groups()
            sort = next(name for name, t in _SORT_TAGS.items() if t == tag)
            if (rank is None) != (sort != "severity") or int(seq) > _MAX_SEQ:
                raise ValueError
            cursor = cls(sort, int(seq), int(rank) if rank is not None else None, bool(back))
            # Only the exact spelling we issue is one we returned (a cursor's padding bits, for one).
            if cursor.encode() != text:
                raise ValueError
            return cursor
        except ValueError:
            raise InvalidInput("cursor is not one this collector returned") from None
