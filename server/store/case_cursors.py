"""Keyset-paging cursors for the case list: the sort key and id of the last case shown, opaque to callers."""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.errors import InvalidInput
from server.store.cursors import decode_text, encode_text

CASE_SORTS = ("due", "updated", "severity")
"""due: soonest due first, cases without a due date last; updated: latest change first; severity: worst first."""
_TAGS = {"due": "d", "updated": "u", "severity": "r"}
_TEXT = re.compile(r"([dur])(n|-?[0-9]{1,18}):([0-9]{1,18})")
"""The key may be negative: a due date before 1970 is before the epoch."""


@dataclass(frozen=True)
class CaseCursor:
    """A position in one sort order: the key (microseconds since the epoch, negative before 1970; a rank; or None for
    "no due date") and the case id."""

    sort: str
    key: int | None
    case_id: int

    def encode(self) -> str:
        return encode_text(f"{_TAGS[self.sort]}{'n' if self.key is None else self.key}:{self.case_id}")

    @classmethod
    def decode(cls, text: str) -> CaseCursor:
        try:
            found = _TEXT.fullmatch(decode_text(text))
            if found is None:
                raise ValueError
            tag, key, case_id = found.groups()
            sort = next(name for name, t in _TAGS.items() if t == tag)
            if key == "n" and sort != "due":
                raise ValueError
            cursor = cls(sort, None if key == "n" else int(key), int(case_id))
            if cursor.encode() != text:  # only the exact spelling we issue
                raise ValueError
            return cursor
        except ValueError:
            raise InvalidInput("cursor is not one this server issued; start again from the first page") from None
