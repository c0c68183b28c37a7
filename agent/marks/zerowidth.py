"""Zero-width carrier: a frame written as invisible characters at the start of words.

Two characters carry the bits, ZERO WIDTH NON-JOINER (U+200C, 0) and ZERO WIDTH JOINER (U+200D, 1):
both stay through copy and paste of formatted text and LibreOffice's conversions between its formats, and neither
changes how a word next to a space renders. A frame (payload.frame_bits, 64 bits) is a run of
clusters of ``width`` bits (4 in prose, 8 in code comments), one cluster in each of consecutive word
gaps, right after the whitespace and before the word; the first cluster has one more character
ahead of its bits, which is the frame's sync, so a reader finds frames by cluster lengths alone
(5 then fifteen 4s, or 9 then seven 8s) without any original.

Survives: copying the text (as long as the copy keeps these characters), reflow, reformatting, any
whitespace change. Does not survive: "paste as plain text" in editors that strip format characters,
PDF export (pdftotext keeps one character of a cluster, not its length: homoglyphs carry PDFs).
Cost: about 195 UTF-8 bytes per frame (one bit per 3-byte character).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from agent.marks import bounds
from agent.marks import payload as pl
from agent.marks.homoglyph import inside

ZERO = "\u200c"
ONE = "\u200d"
CHARS = ZERO + ONE
WIDTHS = (4, 8)
"""Bits per marked gap a reader accepts: 4 in prose (fewer invisible cursor stops per gap), 8 in code
comments (a frame in 8 commented words, so short comments carry one)."""
PERIOD = 96
"""In prose a frame starts every PERIOD word gaps (16 of them marked): any stretch of about 110 words
holds a whole frame, for about 25 % more UTF-8 bytes in plain English text."""

_CLUSTER_RE = re.compile(f"[{CHARS}]+")
_GAP_RE = re.compile(r"(?<=\S)\s+(?=\S)")


def gaps(text: str) -> Iterator[int]:
    """Indices where a word starts after whitespace (never the text's first word): where clusters go."""
    for match in _GAP_RE.finditer(text):
        yield match.end()


def _cluster(bits: list[int], sync: bool) -> str:
    return (ONE if sync else "") + "".join(ONE if bit else ZERO for bit in bits)


def insertions(text: str, payload: bytes, *, period: int = PERIOD, width: int = 4, within: Sequence[tuple[int, int]] | None = None) -> list[tuple[int, str]]:
    """Where to insert which clusters in ``text``: (index, characters), complete frames only.

    ``width`` bits go in each marked gap (one of WIDTHS); a frame starts every ``period`` gaps (back
    to back when it is at most the frame's length). Only word gaps inside ``within`` (sorted,
    disjoint (start, end) ranges; all of the text when None) are used: a reader takes clusters in
    order whatever lies between them.
    """
    if width not in WIDTHS:
        raise ValueError(f"zero-width clusters hold one of {WIDTHS} bits")
    bits = pl.frame_bits(payload)
    per_frame = pl.FRAME_BITS // width
    positions = [index for index in gaps(text) if inside(within, index)]
    edits: list[tuple[int, str]] = []
    start = 0
    while start + per_frame <= len(positions):
        for k in range(per_frame):
            edits.append((positions[start + k], _cluster(bits[k * width : (k + 1) * width], sync=k == 0)))
        start += max(period, per_frame)
    return edits


def read(text: str) -> list[pl.Found]:
    """Every complete zero-width frame in ``text`` whose check holds (carrier ``zero_width``).

    Past the current deadline (bounds.deadline) it stops and returns the frames found so far.
    """
    found: list[pl.Found] = []
    bits: list[int] | None = None
    width = 0
    for count, match in enumerate(_CLUSTER_RE.finditer(text)):
        if count & 0xFFFF == 0xFFFF and bounds.expired():
            break
        cluster = match.group(0)
        if len(cluster) - 1 in WIDTHS:
            bits, width = [1 if c == ONE else 0 for c in cluster[1:]], len(cluster) - 1
        elif len(cluster) == width and bits is not None:
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


_OURS_RE = re.compile(f"(?<=\\s)[{CHARS}]+")


def strip_clusters(text: str, within: Sequence[tuple[int, int]] | None = None) -> str:
    """``text`` without the clusters an earlier mark left after whitespace (inside ``within`` when given).

    Joiners inside words (emoji sequences, Persian and Indic text) stay: a mark never writes there.
    """
    return _OURS_RE.sub(lambda match: "" if inside(within, match.start()) else match.group(0), text)


def strip(text: str) -> str:
    """``text`` without the carrier's characters (what a person sees)."""
    return text.replace(ZERO, "").replace(ONE, "")
