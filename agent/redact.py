"""Redacted snippets: the shape of what matched, never its content.

Only made when configured (``[clipboard] snippets``). Every letter and digit
after the first of each word becomes ``*``, so a reviewer sees "A******** = '****'"
and can tell a key assignment from prose without the agent shipping the key.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")


def redact(text: str) -> str:
    """Keep punctuation, spacing and each word's first character; mask the rest."""
    return _WORD.sub(lambda m: m.group(0)[0] + "*" * (len(m.group(0)) - 1), text)


def snippet(data: bytes, offset: int, *, width: int = 48) -> str:
    """A redacted window of about ``width`` characters starting a little before ``offset``."""
    start = max(0, offset - width // 4)
    window = data[start : start + width].decode("utf-8", errors="replace")
    text = " ".join(window.split())  # newlines and tabs would break one-line views
    return redact(text)
