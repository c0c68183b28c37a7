"""Marks in source code: text carriers inside comments and docstrings, and one canary comment line.

Only comments (and Python docstrings) are written to, never code or string literals, so a marked
file compiles to the same program (a docstring's value gains invisible characters and look-alike
letters, nothing else). What is written:

- a canary line, ``<comment> ref: DLPM1-...`` (payload.token), near the top: after a shebang, an
  encoding line, PHP's open tag;
- zero-width frames (agent/marks/zerowidth.py, 8 bits per word gap) in comment words (CODE_PERIOD):
  a reader takes the clusters in order whatever code lies between them, so any 8 commented words
  in a row (across comments) whose first holds a frame start carry a frame;
- homoglyph frames (agent/marks/homoglyph.py) where a long comment or docstring holds a whole one
  (a reader counts letters in the code between comments too, so a frame needs its letters within
  about 80 words of uninterrupted comment: licence headers, module and API docs).

Comments taken: those that open a line (only indentation before them), never trailing comments;
directives (``# type:``, ``# noqa``, ``//go:build``, ``// eslint-disable``, ``SPDX-...``, coding
lines, comments with no space after the opener) are left alone.

What survives what: reformatting (black, clang-format, gofmt keep comment words): yes; renaming
identifiers: zero-width and the canary line yes, a homoglyph frame only when no renamed identifier
lies inside its span; copying or excerpting: when the excerpt holds the canary line, a whole
zero-width frame (80 to 83 % of random 50-line excerpts of this machine's Python and C, see CODE_PERIOD)
or a whole homoglyph frame (about 20 %); stripping comments: no; retyping: no. Doctest examples in
docstrings are left alone (doctest runs them). Reading is agent.marks.text.read_text on the whole file.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize

from agent.marks import payload as pl
from agent.marks import text as textmarks
from agent.marks import zerowidth
from agent.marks.comments import DIRECTIVE_RE, LANGUAGES, Syntax, directive_block, language
from agent.marks.comments import comment_ranges as scan_comments

__all__ = ["CODE_PERIOD", "LANGUAGES", "Syntax", "comment_ranges", "language", "mark_code"]

CODE_PERIOD = 16
"""A zero-width frame (8 marked comment words) starts every 16 comment words. Measured over 149 Python
modules and C headers of this machine, a random 50-line excerpt held a frame 80 to 83 % of the time
(back to back: 85 %, for twice the added bytes; every 24 words: 80 %); the marked file grew by
62 % at the median (comment-heavy headers more)."""
_CANARY_LINE_RE = re.compile(r"^[ \t]*(?:#|//|--|/\*) ref: DLPM1-[A-Z2-7]{13}(?: \*/)?[ \t]*\r?\n", re.MULTILINE)
"""An earlier mark's canary line: replaced, so a copy carries one payload."""
_HEADER_RE = re.compile(r"#!(?!\[)|.*coding[:=]|#\s*(?:syntax|escape|check)\s*=", re.IGNORECASE)
"""Lines that must stay first: a shebang, an encoding line, Dockerfile parser directives."""


def mark_code(text: str, payload: bytes, *, name: str) -> str:
    """``text`` (a source file named ``name``) with the canary line and comment carriers written.

    Raises payload.Unmarkable for a language this module does not know.
    """
    lang = language(name)
    if lang is None:
        raise pl.Unmarkable(f"no code marking for {name!r}")
    syntax = LANGUAGES[lang]
    text = _CANARY_LINE_RE.sub("", text)
    text = zerowidth.strip_clusters(text, comment_ranges(text, name))
    with_canary = _add_canary(text, payload, syntax, lang)
    ranges = _python_ranges(with_canary) if lang == "python" else None
    if ranges is None:
        ranges = scan_comments(with_canary, syntax, php=lang == "php")
    marked, _ = textmarks.mark_within(with_canary, ranges, payload, period=CODE_PERIOD, width=8)
    return marked


def comment_ranges(text: str, name: str) -> list[tuple[int, int]]:
    """The (start, end) spans of ``text`` mark_code may write to: bodies of line-opening comments, docstrings."""
    lang = language(name)
    if lang is None:
        return []
    ranges = _python_ranges(text) if lang == "python" else None
    return ranges if ranges is not None else scan_comments(text, LANGUAGES[lang], php=lang == "php")


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text[:4096] else "\n"


def _add_canary(text: str, payload: bytes, syntax: Syntax, lang: str) -> str:
    newline = _newline(text)
    line = syntax.canary.format(token=pl.token(payload)) + newline
    lines = text.splitlines(keepends=True)
    at = 0
    if lang == "php":
        opening = next((k for k, item in enumerate(lines) if "<?php" in item), None)
        if opening is None or "?>" in lines[opening].split("<?php", 1)[1]:
            return text
        at = opening + 1
    else:
        while at < min(5, len(lines)) and _HEADER_RE.match(lines[at]):
            at += 1
    if at == len(lines) and lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline
    return "".join(lines[:at]) + line + "".join(lines[at:])


def _offsets(text: str) -> list[int]:
    """Start offset of every line (1-based line numbers index it from 1) for tokenize/ast positions."""
    starts = [0, 0]
    for match in re.finditer("\n", text):
        starts.append(match.end())
    return starts


def _python_ranges(text: str) -> list[tuple[int, int]] | None:
    """Python comment bodies (tokenize) and docstring bodies (ast); None when the file does not parse."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        tree = ast.parse(text)
    except (SyntaxError, tokenize.TokenError, ValueError, RecursionError, MemoryError):
        # Deeply nested expressions (``1 + 1 + ...``, ``------1``) overflow the parser: such a file
        # is read by the generic comment scanner instead.
        return None
    # tokenize and ast count columns in characters of each line; \r\n files keep \r in the line.
    starts = _offsets(text)
    ranges: list[tuple[int, int]] = []
    for token in tokens:
        if token.type != tokenize.COMMENT or token.line[: token.start[1]].strip():
            continue
        body = token.string[1:]
        if DIRECTIVE_RE.search(body):
            continue
        begin = starts[token.start[0]] + token.start[1] + 1
        ranges.append((begin, begin + len(body)))
    nodes: list[ast.AST] = [tree, *(node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    for node in nodes:
        body_nodes = getattr(node, "body", [])
        if not body_nodes or not isinstance(body_nodes[0], ast.Expr):
            continue
        value = body_nodes[0].value
        if not isinstance(value, ast.Constant) or not isinstance(value.value, str) or value.end_lineno is None or value.end_col_offset is None:
            continue
        begin = starts[value.lineno] + _column(text, starts[value.lineno], value.col_offset)
        end = starts[value.end_lineno] + _column(text, starts[value.end_lineno], value.end_col_offset)
        literal = text[begin:end]
        quote = re.match(r"[rRuU]?('''|\"\"\"|'|\")", literal)
        if quote is None or not literal.endswith(quote.group(1)):
            continue
        inner = (begin + quote.end(), end - len(quote.group(1)))
        if directive_block(text[inner[0] : inner[1]]):
            continue
        ranges.extend(_without_doctests(text, *inner))
    return sorted(ranges)


def _without_doctests(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The lines of a docstring outside its doctest examples (``>>>`` to the next blank line): doctest runs those."""
    ranges: list[tuple[int, int]] = []
    in_example = False
    position = start
    for line in text[start:end].splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_example = True
        elif not stripped:
            in_example = False
        if not in_example:
            if ranges and ranges[-1][1] == position:
                ranges[-1] = (ranges[-1][0], position + len(line))
            else:
                ranges.append((position, position + len(line)))
        position += len(line)
    return ranges


def _column(text: str, line_start: int, utf8_offset: int) -> int:
    """ast's col_offset counts UTF-8 bytes: the character column it means."""
    line_end = text.find("\n", line_start)
    line = text[line_start : line_end if line_end >= 0 else len(text)]
    return len(line.encode("utf-8")[:utf8_offset].decode("utf-8", errors="ignore"))
