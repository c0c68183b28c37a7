"""Zero-width carrier: a frame written as invisible characters at the start of words.

Two characters carry the bits, ZERO WIDTH NON-JOINER (U+200C, 0) and ZERO WIDTH JOINER (U+200D, 1):
both survive copy and paste in office suites and LibreOffice's document conversions, and neither
changes how a word next to a space renders. One frame (payload.frame_bits, 64 bits) is 16 clusters
of 4 bits, one cluster in each of 16 consecutive word gaps, right after the whitespace and before the
word; the first cluster has a fifth character ahead of its bits, which is the frame's sync, so a
reader finds frames by cluster lengths alone (5, then fifteen 4s) without any original. Frames
repeat every ``PERIOD`` gaps, so any excerpt of about ``PERIOD + 16`` words holds one.

Survives: copying the text (as long as the copy keeps these characters), reflow, reformatting, any
whitespace change. Does not survive: "paste as plain text" in editors that strip format characters,
PDF export (pdftotext keeps one character of a cluster, not its length: homoglyphs carry PDFs).
Cost: 4 to 5 characters (12 to 15 UTF-8 bytes) per marked gap.
"""

from __future__ import annotations

import bisect
import re
import sys
from collections.abc import Iterator, Sequence

from agent.marks import payload as pl

ZERO = "\u200c"
ONE = "\u200d"
CHARS = ZERO + ONE
BITS_PER_GAP = 4
GAPS_PER_FRAME = pl.FRAME_BITS // BITS_PER_GAP
PERIOD = 24
"""A frame starts every PERIOD word gaps (16 of them marked, 8 left clean)."""

_CLUSTER_RE = re.compile(f"[{CHARS}]+")


def gaps(text: str) -> Iterator[int]:
    """Indices where a word starts after whitespace (never the text's first word): where clusters go."""
    seen_word = False
    previous_space = False
    for index, char in enumerate(text):
        space = char.isspace()
        if not space and previous_space and seen_word:
            yield index
        if not space:
            seen_word = True
        previous_space = space


def _cluster(bits: list[int], sync: bool) -> str:
    return (ONE if sync else "") + "".join(ONE if bit else ZERO for bit in bits)


def insertions(text: str, payload: bytes, *, period: int = PERIOD, within: Sequence[tuple[int, int]] | None = None) -> list[tuple[int, str]]:
    """Where to insert which clusters in ``text``: (index, characters), complete frames only.

    Only word gaps inside ``within`` (sorted, disjoint (start, end) ranges; all of the text when
    None) are used: a reader takes clusters in order whatever lies between them.
    """
    bits = pl.frame_bits(payload)
    positions = [index for index in gaps(text) if within is None or _inside(within, index)]
    edits: list[tuple[int, str]] = []
    start = 0
    while start + GAPS_PER_FRAME <= len(positions):
        for k in range(GAPS_PER_FRAME):
            chunk = bits[k * BITS_PER_GAP : (k + 1) * BITS_PER_GAP]
            edits.append((positions[start + k], _cluster(chunk, sync=k == 0)))
        start += max(period, GAPS_PER_FRAME)
    return edits


def _inside(within: Sequence[tuple[int, int]], index: int) -> bool:
    number = bisect.bisect_right(within, (index, sys.maxsize)) - 1
    return number >= 0 and within[number][0] <= index < within[number][1]


def read(text: str) -> list[pl.Found]:
    """Every complete zero-width frame in ``text`` whose check holds (carrier ``zero_width``)."""
    found: list[pl.Found] = []
    bits: list[int] | None = None
    for match in _CLUSTER_RE.finditer(text):
        cluster = match.group(0)
        if len(cluster) == BITS_PER_GAP + 1:
            bits = [1 if c == ONE else 0 for c in cluster[1:]]
        elif len(cluster) == BITS_PER_GAP and bits is not None:
            bits.extend(1 if c == ONE else 0 for c in cluster)
        else:
            bits = None
            continue
        if len(bits) == pl.FRAME_BITS:
            value = pl.unframe_bits(bits)
            if value is not None:
                found.append(pl.Found(pl.ZERO_WIDTH, value))
            bits = None
    return pl.merge(found)


def strip(text: str) -> str:
    """``text`` without the carrier's characters (what a person sees)."""
    return text.replace(ZERO, "").replace(ONE, "")
