"""Matching a text against fingerprint indexes: ordered chains of shared fingerprints from one corpus file.

One shared fingerprint proves little (13 tokens of common shape); a copy of the customer's
code shares many, in the same order as in the original. The text's fingerprints are
looked up, the hits grouped by corpus file, and chained in text order: a hit extends a
chain when it comes after the chain's last hit in both the text and the corpus file,
within ``MAX_GAP_TOKENS`` tokens in the text and ``MAX_GAP_LINES`` lines in the corpus
(room for a changed statement or inserted dead code). A chain counts the text's tokens
its k-grams cover; a file matches when one chain covers at least the index's
``min_tokens``. Reordered functions make several chains: every chain of a matching file
that covers a guaranteed run is reported as a pair of line ranges.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from agent.scanning.fpindex import FingerprintIndex
from agent.scanning.tokens import Tokens, tokenize
from agent.scanning.winnow import Prints, guarantee, winnow

MAX_GAP_TOKENS = 120
FILL_GAP = 24
STRIDE_SLACK = 12
REFLOW_FACTOR = 3
MAX_GAP_LINES = 60
MAX_OPEN_CHAINS = 32
MAX_FILES_REPORTED = 10
MAX_RANGES = 50
MAX_HITS_PER_FILE = 20_000


@dataclasses.dataclass(frozen=True)
class FingerprintHit:
    """One corpus file that the text copies, and where.

    Attributes:
        index: the index that knows the corpus file.
        source: the corpus file, relative to its corpus root.
        lines: ranges of the scanned text, ``(first, last)`` 1-based and inclusive.
        source_lines: the corresponding ranges of the corpus file, pairwise with ``lines``.
        tokens: tokens of the text the matched chains cover.
        coverage: ``tokens`` over all the text's tokens.
    """

    index: FingerprintIndex
    source: str
    lines: tuple[tuple[int, int], ...]
    source_lines: tuple[tuple[int, int], ...]
    tokens: int
    coverage: float


@dataclasses.dataclass
class _Chain:
    last_at: int
    last_line: int
    covered: int
    covered_to: int
    first_at: int
    source_first: int
    source_last: int
    last_place: int


def find(
    indexes: Sequence[FingerprintIndex],
    data: bytes | bytearray | memoryview,
    *,
    line_offset: int = 0,
    check: Callable[[], object] = lambda: None,
) -> list[FingerprintHit]:
    """The corpus files of ``indexes`` that ``data`` copies, best covered first.

    ``line_offset`` is added to the text's line numbers (a window of a larger file);
    ``check`` is called between steps and may raise to stop (the scan's deadline).
    """
    if not indexes:
        return []
    hits: list[FingerprintHit] = []
    tokens_by_lexicon: dict[int, Tokens] = {}
    prints_by_shape: dict[tuple[int, int, int], Prints] = {}
    for index in indexes:
        lexicon = id(index.lexicon)
        tokens = tokens_by_lexicon.get(lexicon)
        if tokens is None:
            tokens = tokens_by_lexicon[lexicon] = tokenize(data, index.lexicon, check=check)
        shape = (lexicon, index.k, index.w)
        prints = prints_by_shape.get(shape)
        if prints is None:
            prints = prints_by_shape[shape] = winnow(tokens, index.k, index.w)
        check()
        hits.extend(_match_index(index, tokens, prints, line_offset))
    hits.sort(key=lambda h: (-h.tokens, h.index.name, h.source))
    return hits


def _match_index(index: FingerprintIndex, tokens: Tokens, prints: Prints, line_offset: int) -> list[FingerprintHit]:
    if len(prints) == 0:
        return []
    found = index.lookup(prints.hashes)
    if len(found.query) == 0:
        return []
    # A fingerprint that the text itself repeats (a table of similar calls) links a chain but adds no evidence.
    unique, repeats = np.unique(prints.hashes, return_counts=True)
    repeated = repeats[np.searchsorted(unique, prints.hashes)] > 1
    out: list[FingerprintHit] = []
    by_file = np.lexsort((prints.positions[found.query], found.files))
    files_sorted = found.files[by_file]
    candidates = _candidates(files_sorted, prints.positions[found.query[by_file]].astype(np.int64))
    for file_number in candidates:
        lo, hi = np.searchsorted(files_sorted, [file_number, file_number + 1])
        chosen = by_file[lo:hi][:MAX_HITS_PER_FILE]
        at = prints.positions[found.query[chosen]].astype(np.int64)
        first = found.first_lines[chosen].astype(np.int64)
        last = first + found.spans[chosen]
        order = np.lexsort((first, at))
        weak = repeated[found.query[chosen]][order]
        places = found.positions[chosen][order]
        chains = _chains(at[order].tolist(), first[order].tolist(), last[order].tolist(), places.tolist(), weak.tolist(), index.k)
        for chain in chains:
            chain.covered = _consistent(chain, tokens, index.k)
        best = max((c.covered for c in chains), default=0)
        if best < index.min_tokens:
            continue
        reported = _distinct_chains(c for c in chains if c.covered >= guarantee(index.k, index.w))
        lines = tuple(
            (int(tokens.lines[c.first_at]) + line_offset, int(tokens.lines[min(c.last_at + index.k - 1, len(tokens) - 1)]) + line_offset)
            for c in reported
        )[:MAX_RANGES]
        source_lines = tuple((c.source_first, c.source_last) for c in reported)[:MAX_RANGES]
        covered = _union_tokens(reported)
        out.append(
            FingerprintHit(
                index=index,
                source=index.files[int(file_number)],
                lines=lines,
                source_lines=source_lines,
                tokens=covered,
                coverage=round(min(1.0, covered / len(tokens)), 4),
            )
        )
    out.sort(key=lambda h: -h.tokens)
    return out[:MAX_FILES_REPORTED]


def _candidates(files: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Corpus files whose hits could chain: two of them (one k-gram never covers ``min_tokens``)
    within ``MAX_GAP_TOKENS`` of each other in the text. ``files`` sorted, ``at`` sorted within each.

    A large index shares some common k-grams with any text; this keeps the per-file chaining,
    which is Python work, to the files where a chain is possible at all.
    """
    if len(files) < 2:
        return np.zeros(0, dtype=files.dtype)
    close = (files[1:] == files[:-1]) & (np.diff(at) <= MAX_GAP_TOKENS) & (np.diff(at) > 0)
    return np.unique(files[1:][close])


def _chains(at: list[int], first: list[int], last: list[int], places: list[int], weak: list[bool], k: int) -> list[_Chain]:
    """Greedy ordered chaining of one corpus file's hits, sorted by text position."""
    done: list[_Chain] = []
    open_chains: list[_Chain] = []
    for position, line, line_end, place, repeated in zip(at, first, last, places, weak):
        best: _Chain | None = None
        still_open: list[_Chain] = []
        for chain in open_chains:
            if position - chain.last_at > MAX_GAP_TOKENS:
                done.append(chain)
                continue
            still_open.append(chain)
            if (
                chain.last_at < position
                and chain.last_line <= line <= chain.last_line + MAX_GAP_LINES
                and _same_stride(position - chain.last_at, (place - chain.last_place) % 256)
                # The best covered; of equals, the one closest behind in the corpus (repeated shapes).
                and (best is None or (chain.covered, chain.last_line) > (best.covered, best.last_line))
            ):
                best = chain
        open_chains = still_open
        if best is not None:
            # Prints of a shared region are at most w apart: a short gap is shared text too.
            if not repeated:
                gap_start = best.last_at if position - best.last_at <= FILL_GAP else position
                best.covered += position + k - max(gap_start, best.covered_to)
                best.covered_to = position + k
            best.last_at = position
            best.last_line = line
            best.last_place = place
            best.source_last = max(best.source_last, line_end)
        else:
            chain = _Chain(position, line, 0, position, position, line, line_end, place)
            if not repeated:
                chain.covered, chain.covered_to = k, position + k
            open_chains.append(chain)
            if len(open_chains) > MAX_OPEN_CHAINS:
                open_chains.sort(key=lambda c: c.covered)
                done.append(open_chains.pop(0))
    return done + open_chains


def _same_stride(text_gap: int, corpus_gap: int) -> bool:
    """Two hits a copy shares are as far apart in the text as in the corpus file, give or take an
    edit between them: a statement inserted or changed moves them by a dozen tokens or so.

    Hits of common shapes strewn over a file (``private final I I ;`` in every Java class) are
    at unrelated distances, so this is what keeps such chains short. ``corpus_gap`` is known
    modulo 256 (the index keeps 8 bits of each position), plenty for hits at most
    ``MAX_GAP_TOKENS`` apart in the text.
    """
    return abs(text_gap - corpus_gap) <= STRIDE_SLACK + max(text_gap, corpus_gap) // 4


def _distinct_chains(chains: Iterable[_Chain]) -> list[_Chain]:
    """The best-covered chains whose text ranges do not overlap a better one, in text order.

    Repeated code (two similar functions) lets the same text chain to several places.
    """
    kept: list[_Chain] = []
    for chain in sorted(chains, key=lambda c: -c.covered):
        if all(chain.last_at < other.first_at or chain.first_at > other.last_at for other in kept):
            kept.append(chain)
    return sorted(kept, key=lambda c: c.first_at)


def _consistent(chain: _Chain, tokens: Tokens, k: int) -> int:
    """A chain's covered tokens, cut down when it spans far fewer corpus lines than text lines.

    Reflowing a copy changes its line count by a factor of two or three at most; a chain
    whose text side spans many times the lines of its corpus side has matched the same few
    corpus lines again and again (a table of similar statements), which says little.
    """
    text_lines = int(tokens.lines[min(chain.last_at + k - 1, len(tokens) - 1)]) - int(tokens.lines[chain.first_at]) + 1
    source_lines = chain.source_last - chain.source_first + 1
    if source_lines * REFLOW_FACTOR >= text_lines:
        return chain.covered
    return chain.covered * source_lines * REFLOW_FACTOR // text_lines


def _union_tokens(chains: list[_Chain]) -> int:
    """Tokens covered by the chains together (chains of reordered code do not overlap in the text)."""
    total = 0
    reach = -1
    for chain in sorted(chains, key=lambda c: c.first_at):
        start = max(chain.first_at, reach)
        if chain.covered_to > start:
            total += min(chain.covered, chain.covered_to - start)
        reach = max(reach, chain.covered_to)
    return total
