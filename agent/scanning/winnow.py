"""Winnowing (Schleimer, Wilkerson and Aiken, 2003): a few hashes of token k-grams that any copy shares.

Every run of ``k`` consecutive tokens (a k-gram) is hashed; of every ``w`` consecutive
hashes the smallest is kept (the rightmost on ties). Two texts that share a run of at
least ``t = w + k - 1`` tokens share a whole window of ``w`` k-grams, so they keep the
same hash from it: the guarantee. Runs shorter than ``k`` are never found (the noise
threshold). About ``2 / (w + 1)`` of the positions are kept.

With the defaults (``k`` 15, ``w`` 10) the guarantee is 24 tokens: about three lines
of typical code (C-family code has 7-9 tokens a line, Python 5-7, reckoned without blank
and comment lines), so a 20-line excerpt holds several guaranteed windows, and a copy
with a statement changed or inserted every few lines still shares runs longer than ``t``.
Longer k-grams would match less by chance and survive edits worse; bench/fingerprint.py
measured both ways.

Everything here is array arithmetic: hashing and selecting cost a few passes over the
token array whatever its length, no Python work per token.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from agent.scanning.tokens import Tokens

K = 15
W = 10
BLOCK = 1 << 18
"""Windows selected in one pass of array operations (a few MB of temporaries)."""
HASH_BITS = 40
"""Hashes kept: 2^40 values make a chance collision between a scanned k-gram and a
100 MB index (a few million entries) about one in 300,000, and a match needs several."""

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclasses.dataclass(frozen=True)
class Prints:
    """Selected fingerprints of one text, in token order.

    Attributes:
        hashes: ``HASH_BITS``-bit hashes (uint64).
        positions: index of the first token of each k-gram (uint32).
    """

    hashes: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.hashes)


def kgram_hashes(kinds: np.ndarray, k: int = K) -> np.ndarray:
    """The hash of every k-gram of ``kinds`` (``len - k + 1`` of them), ``HASH_BITS`` bits each."""
    count = len(kinds) - k + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    values = kinds.astype(np.uint64) + np.uint64(1)
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            h *= _MULTIPLIER
            h += values[j : j + count]
        # splitmix64's finaliser: the bits used for buckets and minima must be uniform.
        h ^= h >> np.uint64(30)
        h *= _MIX1
        h ^= h >> np.uint64(27)
        h *= _MIX2
        h ^= h >> np.uint64(31)
    return h >> np.uint64(64 - HASH_BITS)


def winnow(tokens: Tokens, k: int = K, w: int = W) -> Prints:
    """The winnowed fingerprints of ``tokens``.

    A text shorter than one window keeps its smallest k-gram hash, so a short snippet
    still has a fingerprint; one shorter than ``k`` tokens has none. Long texts are done
    in blocks that overlap by a window, which selects exactly what one pass would, with
    temporary arrays of a block's size.
    """
    kinds = tokens.kinds
    total = len(kinds) - k + 1
    if total <= 0:
        return Prints(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint32))
    if total <= w:
        hashes = kgram_hashes(kinds, k)
        at = len(hashes) - 1 - int(np.argmin(hashes[::-1]))
        return Prints(hashes[at : at + 1], np.array([at], dtype=np.uint32))
    kept_hashes: list[np.ndarray] = []
    kept_positions: list[np.ndarray] = []
    last = -1
    for start in range(0, total - w + 1, BLOCK):
        # Windows start..stop-1 of the whole text; they need k-grams start..stop+w-2.
        stop = min(start + BLOCK, total - w + 1)
        hashes = kgram_hashes(kinds[start : stop + w - 1 + k - 1], k)
        windows = np.lib.stride_tricks.sliding_window_view(hashes, w)
        # argmin takes the first minimum; of the reversed window that is the rightmost.
        chosen = np.unique(np.arange(len(windows)) + (w - 1) - np.argmin(windows[:, ::-1], axis=1))
        chosen = chosen[chosen + start > last]
        if len(chosen):
            kept_hashes.append(hashes[chosen])
            kept_positions.append((chosen + start).astype(np.uint32))
            last = int(chosen[-1]) + start
    return Prints(np.concatenate(kept_hashes), np.concatenate(kept_positions))


def guarantee(k: int = K, w: int = W) -> int:
    """Tokens a shared run needs to be found for certain."""
    return w + k - 1
