"""Homoglyph carrier: a frame written by swapping a few Latin letters for identical Cyrillic ones.

The swaps are visible text, so they survive what invisible carriers do not: copying the visible
text into a new document, PDF export and pdftotext, printing to PDF, retyping of whitespace, reflow
and hyphenation. Decoding is blind (no original needed).

Slots. Only lowercase ``a c e o p s x y`` (data) and ``i`` (sync) in *plain words* are slots: a
word (a run of letters) that holds at least one ASCII letter outside that set and no other non-ASCII
letter than the Cyrillic look-alikes, in a whitespace-separated chunk that is not a URL, path,
address, identifier or file name (no ``/ \\ @ _ = < > { } [ ] | # $ % ^ * ~ ` ``, no lower-then-upper
case change, no ``letter.letter``). Swapping never changes which words are plain, so writer and
reader agree on the slots; Russian or Ukrainian words have no ASCII letter and are no slots at all.

Frame. A sync is an ``i`` swapped for U+0456; then 16 swaps follow, each 4 bits of
payload.frame_bits: how many data slots stayed Latin since the previous swap (0 to 15). A reader
drops a frame at 16 Latin data slots in a row and checks the CRC, so natural Cyrillic text or a
foreign word does not pass for a frame. Other ``i`` inside a frame stay Latin.

Density (measured on 268 English READMEs and licences of this machine): data slots are about 30 %
of the letters; one swap per 8.5 data slots on average makes about 3.8 % of the letters swapped.
A frame spans 16 swaps, 136 data slots on average (at most 256): about 80 words, 7 lines of prose.
Frames follow each other back to back: a random 50-line excerpt of those files held a whole frame
95 % of the time (short-lined files miss). Fewer swaps cost reach: 5 bits per swap halves the
swapped share but only 77 % of the excerpts then held a frame; blocks of 16 slots with one swap
each (no run lengths) reached 62 %.

Does not survive: retyping, OCR, case changes, translation, Unicode confusable folding (NFKC does
not fold Cyrillic, "skeleton" confusable mapping does), edits that add or drop slot letters inside
a frame (that frame is lost, the others stay).
"""

from __future__ import annotations

import bisect
import itertools
import re
import sys
from array import array
from collections.abc import Iterator, Sequence

from agent.marks import bounds
from agent.marks import payload as pl

LATIN_TO_CYRILLIC = {
    "a": "\u0430",
    "c": "\u0441",
    "e": "\u0435",
    "o": "\u043e",
    "p": "\u0440",
    "s": "\u0455",
    "x": "\u0445",
    "y": "\u0443",
    "i": "\u0456",
}
CYRILLIC_TO_LATIN = {cyr: lat for lat, cyr in LATIN_TO_CYRILLIC.items()}
SYNC_LATIN = "i"
SYNC = LATIN_TO_CYRILLIC[SYNC_LATIN]
BITS_PER_SWAP = 4
MAX_RUN = 1 << BITS_PER_SWAP
"""A swap's symbol is how many data slots stayed Latin since the last swap (or the sync): 0 to 15."""
SWAPS = -(-pl.FRAME_BITS // BITS_PER_SWAP)
_MAX = sys.maxsize
Ranges = Sequence[tuple[int, int]]

LONGEST_CHUNK = 200
"""Longer whitespace-free chunks are no prose (data, URLs, minified code) and hold no slots; the cap
also bounds how far a reader looks back from a sync for its chunk's start."""
_WORD_RE = re.compile(r"[^\W\d_]+")
_CHUNK_RE = re.compile(r"\S+")
_EXCLUDED_RE = re.compile(r"[/\\@_=<>{}\[\]|#$%^*~`]|[a-z][A-Z]|[A-Za-z]\.[a-z]")
_SLOT_RE = re.compile("[" + "".join(LATIN_TO_CYRILLIC) + "".join(CYRILLIC_TO_LATIN) + "]")
_ANCHOR_RE = re.compile("[bdf-hj-nqrtuvwzA-Z]")
_FOREIGN_RE = re.compile("[^\x00-\x7f" + "".join(CYRILLIC_TO_LATIN) + "]")
_HYPHEN_BREAK_RE = re.compile(r"-[ \t]*\r?\n\s*|\u00ad")
_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"})
_TO_LATIN = {ord(cyr): lat for cyr, lat in CYRILLIC_TO_LATIN.items()}
_LENGTH_CHANGES_RE = re.compile("-[ \t]*\r?\n|\u00ad|[\ufb00-\ufb04]")
_SEPARATORS = str.maketrans({"\u200c": " ", "\u200d": " "})


def slots(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """(index, letter) of every slot letter in ``text`` from the chunk starting at ``start``, Latin or Cyrillic, in order."""
    for chunk in _CHUNK_RE.finditer(text, start):
        value = chunk.group(0)
        if len(value) > LONGEST_CHUNK or _EXCLUDED_RE.search(value):
            continue
        base = chunk.start()
        for word in _WORD_RE.finditer(value):
            letters = word.group(0)
            if not _ANCHOR_RE.search(letters) or _FOREIGN_RE.search(letters):
                continue
            for letter in _SLOT_RE.finditer(letters):
                yield base + word.start() + letter.start(), letter.group(0)


def _normalized_with_map(text: str) -> tuple[str, Sequence[int]]:
    """normalize(text) and, for each of its characters, the index in ``text`` it came from."""
    if not _LENGTH_CHANGES_RE.search(text):
        return text.translate(_SEPARATORS), range(len(text))
    out: list[str] = []
    origin: list[int] = []
    position = 0
    for match in _HYPHEN_BREAK_RE.finditer(text):
        for index in range(position, match.start()):
            piece = text[index].translate(_LIGATURES).translate(_SEPARATORS)
            out.append(piece)
            origin.extend([index] * len(piece))
        position = match.end()
    for index in range(position, len(text)):
        piece = text[index].translate(_LIGATURES).translate(_SEPARATORS)
        out.append(piece)
        origin.extend([index] * len(piece))
    return "".join(out), origin


def substitutions(text: str, payload: bytes, *, gap: int = 0, within: Ranges | None = None) -> list[tuple[int, str]]:
    """Which letters of ``text`` to replace by which look-alike: (index, letter), whole frames only.

    Slots are counted over all of ``text`` (what a reader sees) but only letters inside ``within``
    (sorted, disjoint (start, end) ranges; all of it when None) are swapped: a frame goes where its
    sync and its 16 chosen letters all fall inside. Look-alikes already in plain words (an earlier
    mark) go back to Latin first, so a copy carries one mark. ``gap`` data slots are left clean
    between a frame's end and the next sync.
    """
    bits = pl.frame_bits(payload)
    bits += [0] * (SWAPS * BITS_PER_SWAP - len(bits))
    symbols = [int("".join(map(str, bits[k : k + BITS_PER_SWAP])), 2) for k in range(0, len(bits), BITS_PER_SWAP)]
    offsets = list(itertools.accumulate(symbol + 1 for symbol in symbols))
    normalized, origin = _normalized_with_map(text)
    edits: list[tuple[int, str]] = []
    # Per slot: its index in ``text`` (-1 when it may not be swapped) and its Latin letter. Arrays
    # and a list of cached one-letter strings, not tuples: a few bytes a slot, not about a hundred.
    where = array("q")
    letters: list[str] = []
    for count, (index, char) in enumerate(slots(normalized)):
        if count & 0xFFFF == 0:
            bounds.check_time("marking the text")
        source = origin[index]
        if text[source] in CYRILLIC_TO_LATIN and inside(within, source):
            edits.append((source, CYRILLIC_TO_LATIN[text[source]]))
            char = CYRILLIC_TO_LATIN[text[source]]
        usable = text[source] in (char, LATIN_TO_CYRILLIC[char]) and inside(within, source)
        where.append(source if usable else -1)
        letters.append(char)
    data = array("q", (k for k, char in enumerate(letters) if char != SYNC_LATIN))
    rank = array("q", bytes(8 * len(letters)))
    before = 0
    for k, char in enumerate(letters):
        rank[k] = before
        before += char != SYNC_LATIN
    k = 0
    while k < len(letters):
        if letters[k] != SYNC_LATIN or where[k] < 0:
            k += 1
            continue
        start = rank[k] - 1
        if start + offsets[-1] >= len(data):
            break
        chosen = [(where[data[start + offset]], letters[data[start + offset]]) for offset in offsets]
        if any(index < 0 for index, _ in chosen):
            k += 1
            continue
        edits.append((where[k], SYNC))
        edits.extend((index, LATIN_TO_CYRILLIC[char]) for index, char in chosen)
        last = start + offsets[-1] + gap
        k = data[last] + 1 if last < len(data) else len(letters)
    return edits


def inside(within: Ranges | None, index: int) -> bool:
    """Whether ``index`` falls in one of the sorted, disjoint ranges (any index when there are none)."""
    if within is None:
        return True
    number = bisect.bisect_right(within, (index, _MAX)) - 1
    return number >= 0 and within[number][0] <= index < within[number][1]


def normalize(text: str) -> str:
    """Undo what PDF extraction and reflow do to words: hyphenated line breaks, ligatures, soft hyphens."""
    return _HYPHEN_BREAK_RE.sub("", text.translate(_LIGATURES).translate(_SEPARATORS))


def read(text: str) -> list[pl.Found]:
    """Every whole homoglyph frame in ``text`` whose runs and check hold (carrier ``homoglyph``).

    Only the text from each sync on is decoded: a text without one costs a single search. Past
    the current deadline (bounds.deadline) it stops and returns the frames found so far.
    """
    found: list[pl.Found] = []
    normalized = normalize(text) if SYNC in text else ""
    position = 0
    while (sync := normalized.find(SYNC, position)) >= 0:
        start = sync
        while start > 0 and sync - start <= LONGEST_CHUNK and not normalized[start - 1].isspace():
            start -= 1
        position = len(normalized)
        symbols: list[int] | None = None
        run = 0
        for count, (index, char) in enumerate(slots(normalized, start)):
            if count & 0xFFFF == 0xFFFF and bounds.expired():
                return pl.merge(found)
            if char == SYNC:
                symbols, run = [], 0
                continue
            if symbols is None:
                if index > sync:
                    position = index
                    break
                continue
            if char == SYNC_LATIN:
                continue
            if char not in CYRILLIC_TO_LATIN:
                run += 1
                if run == MAX_RUN:
                    symbols = None
                continue
            symbols.append(run)
            run = 0
            if len(symbols) == SWAPS:
                bits = [(symbol >> (BITS_PER_SWAP - 1 - k)) & 1 for symbol in symbols for k in range(BITS_PER_SWAP)]
                value = pl.unframe_bits(bits[: pl.FRAME_BITS])
                if value is not None and not any(bits[pl.FRAME_BITS :]):
                    found.append(pl.Found(pl.HOMOGLYPH, value))
                symbols = None
        position = max(position, sync + 1)
        if bounds.expired():
            break
    return pl.merge(found)


def strip(text: str) -> str:
    """``text`` with every Cyrillic look-alike turned back into its Latin letter (what a person reads)."""
    return text.translate(_TO_LATIN)
