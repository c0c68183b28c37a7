"""Source code as a stream of normalised tokens, each with its line: what fingerprints are taken of.

People who copy code on purpose rename identifiers, reindent, reflow and strip comments.
None of that changes the stream this module makes: every identifier becomes one class
(``IDENT``), every number ``NUMBER``, every string or character literal ``STRING``;
keywords and punctuation keep their own classes; comments and whitespace are dropped.

One lexer serves every language, and it never looks at a file name. A copy renamed to
``.txt``, pasted into the clipboard or put inside a zip must give the same tokens as the
original, so the language cannot come from the name, and guessing it from the content
fails on excerpts. The lexer takes the union of the C family's, Python's and the shell's
lexical rules (``//`` and ``/* */`` comments, ``#`` comments unless a preprocessor
directive follows, triple-quoted, quoted and backtick strings). Where it reads a language
wrongly (``//`` is floor division in Python) it reads the original and the copy the same
wrong way, which is all matching needs.

Strings that may span lines (Python's triple-quoted ones, JavaScript's template literals,
Go's raw strings) are not read as one token: an excerpt that starts inside one would
read every string after it as code and every piece of code as a string. The delimiter
is dropped and the lines inside are lexed like code, so the original and any excerpt of
it agree; prose read this way makes k-grams too plain to be kept in an index.

Why not tree-sitter or pygments: both need the language first (see above), and walking
their trees or token streams costs Python work per token, about 0.3-1 MB/s; this module
does every per-token step in C (one ``re.findall``, then ``map`` over built-in functions)
and the rest as array operations, 10-20 MB/s a core (bench/fingerprint.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import re
from collections.abc import Callable, Sequence

import numpy as np

DROP = 0
"""Comments and line ends: counted for line numbers, then removed."""
IDENT = 1
NUMBER = 2
STRING = 3
BLOCK_BYTES = 1 << 20

_TOKEN = re.compile(
    rb"/\*.*?(?:\*/|\Z)"  # block comment (an unterminated one runs to the end)
    rb"|//[^\n]*"
    rb"|#(?!(?:include|define|undef|ifdef|ifndef|if|elif|else|endif|pragma|import|error|line|region|endregion)\b)[^\n]*"
    rb'|"""|\'\'\''  # a triple quote alone: what it encloses is lexed like the rest (see below)
    rb'|"(?:[^"\\\n]|\\.)*"?'
    rb"|'(?:[^'\\\n]|\\.)*'?"
    rb"|`(?:[^`\\\n]|\\.)*`?"
    rb"|[A-Za-z_$\x80-\xff][\w$\x80-\xff]*"
    rb"|[0-9](?:[eE][+-]|[\w.])*"
    rb"|\n"
    rb"|[^\s]",
    re.S,
)

# Reserved words of the common languages that nobody can rename (a variable cannot be called
# ``while``). Words that are keywords in one language but everyday names in another (``type``,
# ``string``, ``map``, ``select``, ``value``) are left out: a renamer would rename them there.
KEYWORDS = tuple(
    """
    abstract and as assert async auto await bool boolean break byte case catch char chan class
    const constexpr continue def default defer del delete do double elif else enum except explicit
    export extends extern false fallthrough final finally float for foreach friend from func function
    global go goto if implements import in inline instanceof int interface is lambda let long mutable
    namespace native new nil none None noexcept nonlocal not null nullptr operator or package pass
    private protected public raise register return short signed sizeof static struct super switch
    synchronized template this throw throws transient True False true try typedef typename typeof
    undefined union unsigned using var virtual void volatile while with yield
    """.split()
)
_FIRST_PUNCT = 4
_PUNCTUATION = b"!%&()*+,-./:<=>?@[]^{|}~#\\"
_KEYWORD_BASE = _FIRST_PUNCT + len(_PUNCTUATION)
_VOCABULARY_BASE = 256
MAX_VOCABULARY = 60_000

# The class of a token by its first byte (a keyword's or a vocabulary name's own class is looked up after).
# ``;`` is dropped: JavaScript reads the same with and without, and formatters add or remove them.
_BY_FIRST = bytearray([DROP] * 256)
for _byte in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_$" + bytes(range(0x80, 0x100)):
    _BY_FIRST[_byte] = IDENT
for _byte in b"0123456789":
    _BY_FIRST[_byte] = NUMBER
for _byte in b"\"'`":
    _BY_FIRST[_byte] = STRING
for _index, _byte in enumerate(_PUNCTUATION):
    _BY_FIRST[_byte] = _FIRST_PUNCT + _index
_BY_FIRST_TABLE = bytes(_BY_FIRST)
_KEYWORD_CLASSES = {word.encode(): _KEYWORD_BASE + i for i, word in enumerate(sorted(set(KEYWORDS)))}
assert _KEYWORD_BASE + len(_KEYWORD_CLASSES) < _VOCABULARY_BASE
_COMMENT_START = np.zeros(256, dtype=bool)
_COMMENT_START[[ord("/"), ord("#")]] = True
_NEWLINE = ord("\n")
_MAY_SPAN = np.zeros(256, dtype=bool)
_MAY_SPAN[[ord(c) for c in "/\"'`"]] = True
_COMMA = _BY_FIRST[ord(",")]
_CLOSERS = np.array([_BY_FIRST[ord(c)] for c in ")]}"], dtype=np.uint16)
_first_byte = operator.itemgetter(0)


class Lexicon:
    """Keywords plus a vocabulary: names that keep their own class instead of becoming ``IDENT``.

    A fingerprint index carries the vocabulary its corpus was tokenized with (the names
    its code uses but never defines: library functions, methods of other people's
    objects, modules; see signatures/fingerprint.py). Renaming a copy cannot change those
    without breaking it, and they make the token stream far more particular than keywords
    and punctuation alone.
    """

    def __init__(self, vocabulary: Sequence[str] = ()):
        if len(vocabulary) > MAX_VOCABULARY:
            raise ValueError(f"a vocabulary holds at most {MAX_VOCABULARY:,} names")
        self.vocabulary = tuple(vocabulary)
        self.table = {**_KEYWORD_CLASSES, b'"""': DROP, b"'''": DROP}
        for i, name in enumerate(self.vocabulary):
            word = name.encode()
            if word not in self.table:
                self.table[word] = _VOCABULARY_BASE + i


PLAIN = Lexicon()
"""Keywords only."""


@dataclasses.dataclass(frozen=True)
class Tokens:
    """The token classes of a text (uint16) and the 1-based line each token starts on (uint32)."""

    kinds: np.ndarray
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.kinds)


def tokenize(
    data: bytes | bytearray | memoryview, lexicon: Lexicon = PLAIN, *, check: Callable[[], object] = lambda: None
) -> Tokens:
    """Normalised tokens of ``data`` (any bytes; text in an ASCII-compatible encoding is read right).

    Linear in the size of ``data``: every pattern of the lexer either consumes what it
    tried or fails on its first byte, so no input makes it backtrack. Text is lexed a
    block of about ``BLOCK_BYTES`` at a time (cut at a line end where there is one), so
    the lexer's temporary list stays small whatever the size; ``check`` is called between
    blocks and may raise to stop (the scan's deadline).
    """
    view = memoryview(data).cast("B")
    if len(view) <= BLOCK_BYTES:
        return _tokenize_block(bytes(view), 0, lexicon)
    kinds: list[np.ndarray] = []
    lines: list[np.ndarray] = []
    start = 0
    line = 0
    while start < len(view):
        stop = min(start + BLOCK_BYTES, len(view))
        block = bytes(view[start:stop])
        if stop < len(view):
            cut = block.rfind(b"\n")
            if cut > 0:
                block = block[: cut + 1]
        part = _tokenize_block(block, line, lexicon)
        kinds.append(part.kinds)
        lines.append(part.lines)
        line += block.count(b"\n")
        start += len(block)
        check()
    return Tokens(np.concatenate(kinds), np.concatenate(lines))


def _tokenize_block(data: bytes, line_offset: int, lexicon: Lexicon) -> Tokens:
    found = _TOKEN.findall(data)
    if not found:
        return Tokens(np.zeros(0, dtype=np.uint16), np.zeros(0, dtype=np.uint32))
    count = len(found)
    firsts = bytes(map(_first_byte, found))
    kinds = np.fromiter(map(lexicon.table.get, found, firsts.translate(_BY_FIRST_TABLE)), dtype=np.uint16, count=count)
    lengths = np.fromiter(map(len, found), dtype=np.uint32, count=count)
    first = np.frombuffer(firsts, dtype=np.uint8)
    # Line ends are tokens of their own; only a block comment or a string with an escaped
    # line end holds one inside, so only those longer tokens are counted.
    newlines = (first == _NEWLINE).astype(np.uint32)
    spanning = np.flatnonzero(_MAY_SPAN[first] & (lengths > 2))
    if len(spanning):
        newlines[spanning] = np.fromiter(
            map(bytes.count, map(found.__getitem__, spanning.tolist()), itertools.repeat(b"\n")),
            dtype=np.uint32,
            count=len(spanning),
        )
    comment = _COMMENT_START[first] & (lengths > 1)
    keep = (kinds != DROP) & ~comment
    lines = np.cumsum(newlines, dtype=np.uint32) - newlines + np.uint32(1 + line_offset)
    kinds, lines = kinds[keep], lines[keep]
    # A trailing comma (``f(a, b,)``) comes and goes with formatters: drop it.
    trailing = np.flatnonzero((kinds[:-1] == _COMMA) & np.isin(kinds[1:], _CLOSERS))
    if len(trailing):
        kinds, lines = np.delete(kinds, trailing), np.delete(lines, trailing)
    return Tokens(kinds, lines)
