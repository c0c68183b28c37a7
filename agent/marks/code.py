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
from dataclasses import dataclass
from pathlib import PurePosixPath

from agent.marks import payload as pl
from agent.marks import text as textmarks
from agent.marks import zerowidth

CODE_PERIOD = 16
"""A zero-width frame (8 marked comment words) starts every 16 comment words. Measured over 149 Python
modules and C headers of this machine, a random 50-line excerpt held a frame 80 to 83 % of the time
(back to back: 85 %, for twice the added bytes; every 24 words: 80 %); the marked file grew by
62 % at the median (comment-heavy headers more)."""


@dataclass(frozen=True)
class Syntax:
    """How one language family writes comments and the strings a comment opener may hide in."""

    line: tuple[str, ...] = ("//",)
    block: tuple[tuple[str, str], ...] = (("/*", "*/"),)
    nested: bool = False
    strings: tuple[str, ...] = ('"', "'")
    multiline: tuple[str, ...] = ()
    """String delimiters that may span lines (with backslash escapes)."""
    raw: tuple[str, ...] = ()
    """Delimiters of strings without escapes that may span lines (Go's backquote)."""
    heredoc: bool = False
    regex: bool = False
    canary: str = "// ref: {token}"


C_LIKE = Syntax()
C = Syntax(canary="/* ref: {token} */")
JS = Syntax(strings=('"', "'"), multiline=("`",), regex=True)
GO = Syntax(strings=('"', "'"), raw=("`",))
RUST = Syntax(strings=('"',), nested=True)
JVM = Syntax(multiline=('"""',), nested=False)
NESTED = Syntax(multiline=('"""',), nested=True)
CSHARP = Syntax(multiline=('"""',))
HASH = Syntax(line=("#",), block=(), heredoc=True, canary="# ref: {token}")
PYTHON = Syntax(line=("#",), block=(), multiline=('"""', "'''"), canary="# ref: {token}")
RUBY = Syntax(line=("#",), block=(("=begin", "=end"),), heredoc=True, canary="# ref: {token}")
SQL = Syntax(line=("--",), strings=("'", '"'), canary="-- ref: {token}")
LUA = Syntax(line=("--",), block=(("--[[", "]]"),), multiline=("[[",), canary="-- ref: {token}")
PHP = Syntax(line=("//", "#"), heredoc=True)

LANGUAGES: dict[str, Syntax] = {
    "python": PYTHON,
    "javascript": JS,
    "typescript": JS,
    "java": JVM,
    "c": C,
    "c++": C_LIKE,
    "c#": CSHARP,
    "objective-c": C,
    "go": GO,
    "rust": RUST,
    "kotlin": NESTED,
    "swift": NESTED,
    "scala": NESTED,
    "groovy": JVM,
    "dart": JVM,
    "php": PHP,
    "ruby": RUBY,
    "shell": HASH,
    "perl": HASH,
    "r": HASH,
    "sql": SQL,
    "lua": LUA,
}

EXTENSIONS = {
    **dict.fromkeys(("py", "pyw", "pyi"), "python"),
    **dict.fromkeys(("js", "mjs", "cjs", "jsx"), "javascript"),
    **dict.fromkeys(("ts", "tsx", "mts", "cts"), "typescript"),
    "java": "java",
    **dict.fromkeys(("c", "h"), "c"),
    **dict.fromkeys(("cc", "cpp", "cxx", "c++", "hpp", "hh", "hxx", "h++", "ino"), "c++"),
    "cs": "c#",
    **dict.fromkeys(("m", "mm"), "objective-c"),
    "go": "go",
    "rs": "rust",
    **dict.fromkeys(("kt", "kts"), "kotlin"),
    "swift": "swift",
    **dict.fromkeys(("scala", "sc"), "scala"),
    **dict.fromkeys(("groovy", "gradle"), "groovy"),
    "dart": "dart",
    "php": "php",
    **dict.fromkeys(("rb", "rake", "gemspec"), "ruby"),
    **dict.fromkeys(("sh", "bash", "zsh", "ksh"), "shell"),
    **dict.fromkeys(("pl", "pm"), "perl"),
    "r": "r",
    "sql": "sql",
    "lua": "lua",
}
NAMES = {"Makefile": "shell", "Dockerfile": "shell", "Rakefile": "ruby", "Gemfile": "ruby"}
"""Files known by name (a Makefile's comments are ``#`` lines like a shell script's)."""

_DIRECTIVE_RE = re.compile(
    r"^\S|^\s*(?:!|-\*-|type:|noqa|pragma|pylint|mypy|pyright|fmt:|isort|eslint|prettier|istanbul|c8 |ts-|@ts-|jshint|"
    r"global |NOLINT|nolint|go:|\+build|clang-format|region|endregion|swiftlint|ktlint|rubocop|frozen_string_literal|"
    r"shellcheck|cspell|@flow|@jsx|@license|@preserve|language=|sourceMappingURL|<reference|<auto-generated)"
    r"|^\s*[\w.@/-]+\s*=|SPDX-|coding[:=]|vim?:|\bDLPM1-|\bDLPC1-",
    re.IGNORECASE,
)
"""Comments tools read (or ours): never written to."""
_CANARY_LINE_RE = re.compile(r"^[ \t]*(?:#|//|--|/\*) ref: DLPM1-[A-Z2-7]{13}(?: \*/)?[ \t]*\r?\n", re.MULTILINE)
"""An earlier mark's canary line: replaced, so a copy carries one payload."""
_HEADER_RE = re.compile(r"#!(?!\[)|.*coding[:=]|#\s*(?:syntax|escape|check)\s*=", re.IGNORECASE)
"""Lines that must stay first: a shebang, an encoding line, Dockerfile parser directives."""
_HEREDOC_RE = re.compile(r"<<[-~]?\s*(['\"]?)([A-Za-z_]\w*)\1")
_RUST_CHAR_RE = re.compile(r"'(?:\\.[^']{0,8}|[^\\'\n])'")
_REGEX_BEFORE = set("(,=:[!&|?{};+-*%<>~^")


def language(name: str) -> str | None:
    """The language of a file by its name (extension, or well-known names like Makefile); None if unknown."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.name in NAMES:
        return NAMES[path.name]
    suffix = path.suffix[1:]
    return EXTENSIONS.get(suffix) or EXTENSIONS.get(suffix.lower()) if suffix else None


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
        ranges = _comment_ranges(with_canary, syntax, php=lang == "php")
    marked, _ = textmarks.mark_within(with_canary, ranges, payload, period=CODE_PERIOD, width=8)
    return marked


def comment_ranges(text: str, name: str) -> list[tuple[int, int]]:
    """The (start, end) spans of ``text`` mark_code may write to: bodies of line-opening comments, docstrings."""
    lang = language(name)
    if lang is None:
        return []
    ranges = _python_ranges(text) if lang == "python" else None
    return ranges if ranges is not None else _comment_ranges(text, LANGUAGES[lang], php=lang == "php")


def _directive_block(body: str) -> bool:
    """Whether a block comment or docstring is one tools read (judged by its first words)."""
    return _DIRECTIVE_RE.search(" " + body.lstrip()[:80]) is not None


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
        if _DIRECTIVE_RE.search(body):
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
        if _directive_block(text[inner[0] : inner[1]]):
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


def _comment_ranges(text: str, syntax: Syntax, *, php: bool = False) -> list[tuple[int, int]]:
    """Bodies of comments that open a line, found by a lexer that skips strings, heredocs and regex literals."""
    ranges: list[tuple[int, int]] = []
    index, end = 0, len(text)
    if php:
        opening = text.find("<?php")
        if opening < 0:
            return []
        index = opening + 5
        closing = text.find("?>", index)
        end = closing if closing >= 0 else end
    line_start = text.rfind("\n", 0, index) + 1
    pending_heredocs: list[tuple[str, bool]] = []
    last_code = ""
    blank = not text[line_start:index].strip()  # nothing but whitespace since the line's start
    while index < end:
        char = text[index]
        if char == "\n":
            index += 1
            line_start = index
            if pending_heredocs:
                index = _skip_heredocs(text, index, pending_heredocs)
                pending_heredocs = []
                line_start = index
            blank = True
            continue
        at_line_start = blank
        opener = next((item for item in syntax.line if text.startswith(item, index)), None)
        if opener is not None and not (opener == "#" and php and text.startswith("#[", index)):
            stop = text.find("\n", index)
            stop = end if stop < 0 or stop > end else stop
            body_end = stop - 1 if stop > 0 and text[stop - 1] == "\r" else stop
            if at_line_start and not _DIRECTIVE_RE.search(text[index + len(opener) : body_end]):
                ranges.append((index + len(opener), body_end))
            index = stop
            continue
        block = next((pair for pair in syntax.block if text.startswith(pair[0], index)), None)
        if block is not None and (block[0] != "=begin" or index == line_start):
            stop = _block_end(text, index, block, syntax.nested)
            body = (index + len(block[0]), max(index + len(block[0]), stop - len(block[1])))
            if at_line_start and not _directive_block(text[body[0] : body[1]]):
                ranges.append(body)
            index, blank = stop, False
            continue
        start = index
        index, last_code = _skip_code(text, index, syntax, last_code, pending_heredocs)
        blank = blank and not text[start:index].strip()
    return [item for item in ranges if item[1] <= end]


def _block_end(text: str, index: int, block: tuple[str, str], nested: bool) -> int:
    opener, closer = block
    depth, position = 1, index + len(opener)
    while depth:
        stop = text.find(closer, position)
        if stop < 0:
            return len(text)
        if nested:
            inner = text.find(opener, position, stop)
            if inner >= 0:
                depth += 1
                position = inner + len(opener)
                continue
        depth -= 1
        position = stop + len(closer)
    return position


def _skip_code(text: str, index: int, syntax: Syntax, last_code: str, heredocs: list[tuple[str, bool]]) -> tuple[int, str]:
    """Past one code token at ``index``: a string literal, a heredoc opener, a regex literal, or one character."""
    for delimiter in syntax.multiline:
        if text.startswith(delimiter, index):
            return _skip_string(text, index + len(delimiter), delimiter, escapes=True, multiline=True), delimiter
    for delimiter in syntax.raw:
        if text.startswith(delimiter, index):
            stop = text.find(delimiter, index + len(delimiter))
            return (len(text) if stop < 0 else stop + len(delimiter)), delimiter
    char = text[index]
    if syntax is RUST:
        raw = re.match(r'r(#*)"', text[index : index + 300])
        if raw and (index == 0 or not (text[index - 1].isalnum() or text[index - 1] == "_")):
            closing = '"' + raw.group(1)
            stop = text.find(closing, index + raw.end())
            return (len(text) if stop < 0 else stop + len(closing)), '"'
        if char == "'":
            literal = _RUST_CHAR_RE.match(text, index)
            return (literal.end() if literal else index + 1), "'"
    if char in syntax.strings:
        return _skip_string(text, index + 1, char, escapes=True, multiline=False), char
    if syntax.heredoc and text.startswith("<<", index):
        heredoc = _HEREDOC_RE.match(text, index)
        if heredoc:
            heredocs.append((heredoc.group(2), text[index + 2] in "-~"))
            return heredoc.end(), "x"
    if syntax.regex and char == "/" and (last_code in _REGEX_BEFORE or not last_code):
        regex_end = _skip_regex(text, index + 1)
        if regex_end is not None:
            return regex_end, "/"
    return index + 1, last_code if char.isspace() else char


def _skip_string(text: str, index: int, delimiter: str, *, escapes: bool, multiline: bool) -> int:
    while index < len(text):
        if escapes and text[index] == "\\":
            index += 2
            continue
        if text.startswith(delimiter, index):
            return index + len(delimiter)
        if text[index] == "\n" and not multiline:
            return index
        index += 1
    return len(text)


def _skip_regex(text: str, index: int) -> int | None:
    """End of a JavaScript regex literal's body starting at ``index``, or None if this ``/`` divides."""
    in_class = False
    while index < len(text) and text[index] != "\n":
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "/" and not in_class:
            return index + 1
        index += 1
    return None


def _skip_heredocs(text: str, index: int, heredocs: list[tuple[str, bool]]) -> int:
    """Past the bodies of the heredocs opened on the line before ``index`` (their terminator lines included)."""
    for word, indented in heredocs:
        while index < len(text):
            stop = text.find("\n", index)
            line = text[index : len(text) if stop < 0 else stop].rstrip("\r")
            index = len(text) if stop < 0 else stop + 1
            if (line.strip() if indented else line) == word:
                break
    return index
