"""Marks in running text: homoglyph and zero-width frames written into prose, and every text carrier read back.

Documents hand their text runs here (mark_segments keeps run boundaries, so formatting stays; put a
whitespace-only segment between paragraphs, as a reader's extracted text has one), code marks its
comments through mark_within (agent/marks/code.py), and every scanned text is read here (read_text). Both
carriers change nothing a person sees: a homoglyph swap replaces one letter by an identical one,
zero-width clusters go between words. They fail differently, which is why both are written:
zero-width characters vanish in PDF export and "paste as plain text" but leave every visible letter
alone; homoglyphs survive PDF, pdftotext and copying the visible text, and are lost to retyping.
See agent/marks/homoglyph.py and agent/marks/zerowidth.py for densities and frame lengths.

Measured on this machine's 268 English READMEs and licences (random 50-line excerpts of the marked
text, 20 per file): 99.9 % held a frame (zero-width 99.7 %, homoglyph 95 to 96 %); the plain text grew by
33 % at the median (zero-width; homoglyphs alone: 2.6 %). No excerpt ever read as another payload.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.marks import homoglyph, zerowidth
from agent.marks import payload as pl

_NEEDLES = (
    zerowidth.ZERO.encode("utf-8"),
    zerowidth.ONE.encode("utf-8"),
    homoglyph.SYNC.encode("utf-8"),
    pl.TOKEN_PREFIX.encode("ascii"),
    b"DLPC1-",
    b"AKIA",
)
"""What any frame needs: a zero-width bit, a homoglyph sync letter, a token or canary prefix. Six
substring searches (memchr-fast, well under a millisecond per MB each) beat one regex alternation
(about 10 ms per MB, 15 on Cyrillic text, where every lead byte starts a candidate)."""


def _mark(
    segments: Sequence[str],
    payload: bytes,
    *,
    zero_width: bool,
    homoglyphs: bool,
    within: homoglyph.Ranges | None = None,
    period: int = zerowidth.PERIOD,
    width: int = 4,
) -> tuple[list[str], list[str]]:
    if within is None:
        segments = _without_old_clusters(segments)
    text = "".join(segments)
    starts: list[int] = []
    offset = 0
    for segment in segments:
        starts.append(offset)
        offset += len(segment)
    swaps = dict(homoglyph.substitutions(text, payload, within=within)) if homoglyphs else {}
    inserts = dict(zerowidth.insertions(text, payload, within=within, period=period, width=width)) if zero_width else {}
    carriers = []
    if any(char == homoglyph.SYNC for char in swaps.values()):
        carriers.append(pl.HOMOGLYPH)
    if inserts:
        carriers.append(pl.ZERO_WIDTH)
    # Slices between the edited characters, not a list of every character (8 bytes a character more).
    points = sorted(swaps.keys() | inserts.keys())
    out: list[str] = []
    k = 0
    for start, segment in zip(starts, segments, strict=True):
        end = start + len(segment)
        parts: list[str] = []
        at = start
        while k < len(points) and points[k] < end:
            index = points[k]
            parts += [text[at:index], inserts.get(index, ""), swaps.get(index, text[index])]
            at = index + 1
            k += 1
        parts.append(text[at:end])
        out.append("".join(parts))
    return out, carriers


def _without_old_clusters(segments: Sequence[str]) -> list[str]:
    """Segments without an earlier mark's zero-width clusters, so a copy carries one payload."""
    out: list[str] = []
    previous = " "
    for segment in segments:
        cleaned = zerowidth.strip_clusters(previous[-1:] + segment)[1:] if segment else segment
        out.append(cleaned)
        previous = cleaned or previous
    return out


def mark_segments(segments: Sequence[str], payload: bytes, *, zero_width: bool = True, homoglyphs: bool = True) -> list[str]:
    """``segments`` (a document's text runs, a file's comment bodies) marked as one continuous text.

    Returns as many segments, each visibly identical to its original: homoglyph swaps (one letter
    for one letter) and zero-width clusters at the start of words, never inside a word nor in a
    segment of whitespace only. Frames repeat through the whole text; a text too short for one
    frame of a carrier gets none of it.
    """
    marked, _ = _mark(segments, payload, zero_width=zero_width, homoglyphs=homoglyphs)
    return marked


def mark_within(
    text: str,
    within: homoglyph.Ranges,
    payload: bytes,
    *,
    zero_width: bool = True,
    homoglyphs: bool = True,
    period: int = zerowidth.PERIOD,
    width: int = 4,
) -> tuple[str, list[str]]:
    """``text`` marked only inside ``within`` (sorted, disjoint (start, end) ranges), and the carriers written.

    For text whose other parts must stay byte for byte (code outside comments, Markdown code spans
    and link targets): the reader still sees the whole text, so homoglyph slots are counted over
    all of it and a frame goes only where every letter it swaps falls inside the ranges.
    """
    marked, carriers = _mark([text], payload, zero_width=zero_width, homoglyphs=homoglyphs, within=within, period=period, width=width)
    return marked[0], carriers


def mark_text(text: str, payload: bytes, *, zero_width: bool = True, homoglyphs: bool = True) -> str:
    """``text`` marked (mark_segments of one segment); raises payload.Unmarkable when no whole frame fits."""
    marked, carriers = _mark([text], payload, zero_width=zero_width, homoglyphs=homoglyphs)
    if not carriers:
        raise pl.Unmarkable("the text is too short for a mark")
    return marked[0]


def read_text(text: str) -> list[pl.Found]:
    """Every mark in ``text``: zero-width and homoglyph frames, DLPM1 tokens, canary secrets (merged).

    Linear in the text; frames are found wherever they start (excerpts), whatever the whitespace,
    line breaks and hyphenation became.
    """
    found = zerowidth.read(text) + homoglyph.read(text) + pl.read_tokens(text) + pl.read_canaries(text)
    return pl.merge(found)


def might_carry(data: bytes) -> bool:
    """False when read_text would find nothing in ``data`` (UTF-8): a few substring searches, for the scanner."""
    return any(needle in data for needle in _NEEDLES)


def visible(text: str) -> str:
    """``text`` as a person reads it: zero-width characters dropped, look-alikes back to Latin."""
    return homoglyph.strip(zerowidth.strip(text))
