"""A corpus of code and documents read as the scanner sees it, and the lines that could identify it.

A unit is the text one YARA call matches: a text file as it is, the text of a PDF, or one
text part of an Office document or archive member, extracted by the agent's own extractors
(``agent.scanning.extract``/``doctext``) so that rule strings are taken from exactly the
text the scanner will match. Lines are normalised by ``normalise``, which the baseline
uses too, so "this line is in the baseline" compares like with like. ``keys`` then keeps
the lines distinctive enough to become strings.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import stat
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from agent.scanning.budget import Budget
from agent.scanning.doctext import xml_to_text
from agent.scanning.errors import LimitHit
from agent.scanning.extract import READ_ERRORS, members
from agent.scanning.limits import ScanLimits
from agent.scanning.sniff import CONTAINERS, SNIFF_BYTES, Kind, sniff

SOURCE_CODE = "source_code"
DOCUMENT = "document"

DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_KEY_BYTES = 80
"""Longer lines are cut into pieces of this size: a minified file still yields many strings."""

BINARY_PROBE_BYTES = 8192
PROSE_SUFFIXES = frozenset({".txt", ".md", ".rst", ".csv", ".tsv", ".rtf", ".tex", ".adoc", ".org", ".html", ".htm"})
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})
"""Besides hidden folders (.git, .venv...): caches and third-party code are not the customer's."""

# Office parts that hold what people wrote. Styles, themes and document properties read the
# same in every document ("Normal", "Calibri", "Microsoft Office Word"): strings from them
# would fire on anybody's document.
_OFFICE_TEXT_PART = re.compile(
    r"(word/(document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml"
    r"|ppt/(slides|notesSlides)/[^/]+\.xml|xl/(sharedStrings|worksheets/[^/]+)\.xml|content\.xml)",
    re.I,
)
_ERRORS: tuple[type[BaseException], ...] = (LimitHit, *READ_ERRORS)
_COMMENT_MARK = re.compile(rb"^[ \t]*(?:#+|//+|/\*+|\*+|--+|;+)?[ \t]*", re.M)

MIN_KEY_BYTES = 16
# Words that say nothing about whose code a line is: keywords of common languages and the
# names everybody uses. A line needs two words besides these to be distinctive.
_COMMON_WORDS = frozenset(
    b"""
    and as assert async await break case catch char class const continue def default del delete do
    elif else enum except export extends false final finally float for from func function global go
    if impl import in instanceof int interface is lambda let long new nil none nonlocal not null or
    package pass private protected public raise return self static string struct super switch this
    throw throws true try type typeof undefined var void while with yield
    args kwargs cls obj item items key keys value values name data result results err error e ex
    exc i j k n x y ctx req res request response callback cb fn options opts config node index len
    str list dict set get put bool object number boolean any tuple println printf
    console log fmt os sys re path file line text msg message
    isinstance issubclass range print property staticmethod classmethod open getattr setattr
    hasattr exception baseexception valueerror typeerror keyerror runtimeerror notimplementederror
    optional union callable iterable iterator sequence mapping prototype module exports require
    promise array math json symbol map date regexp push length
    """.split()
)
# Licence texts are copied into code everywhere, wrapped and commented every which way: no line
# of one identifies a customer, even where the baseline holds the same text wrapped differently.
_LICENCE_WORDS = re.compile(
    rb"warrant|merchantab|liab|copyright|licen[cs]|redistribut|infring|disclaim|rights reserved|hereby granted"
    rb"|neither the name|substitute goods|business interruption|arising in any way|general public|spdx"
    rb"|consequential|incidental|endorse or promote|in no event|prior written permission|fitness for a particular"
    rb"|such damage|with the distribution|following conditions|above copyright|binary form|substantial portions"
    rb"|free of charge|deal in the software|sublicense",
    re.I,
)
_WORD = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*")
_PY_IMPORT = re.compile(rb"(?:from\s+(\.*[\w.]*)\s+import\b|import\s+([\w.]+))")
_JS_IMPORT = re.compile(rb"""(?:\brequire\s*\(\s*|\bimport\s*\(\s*|\bfrom\s+|^import\s+)['"]([^'"]+)['"]""")
_OTHER_IMPORT = re.compile(rb"(?:include\s*[<\"]|using\s+(?:static\s+)?|import\s+(?:static\s+)?)([\w./]+)")


@dataclasses.dataclass(frozen=True)
class Unit:
    """Text that the scanner matches in one piece.

    Attributes:
        name: where it came from, relative to its corpus root; ``file!member`` for a part.
        category: ``source_code`` or ``document`` (becomes the rule's category).
        lines: the normalised lines; blank ones are kept so an index is a line number.
    """

    name: str
    category: str
    lines: tuple[bytes, ...]


@dataclasses.dataclass(frozen=True)
class Skip:
    """A corpus file that gave no text, and why."""

    path: str
    reason: str


@dataclasses.dataclass
class Corpus:
    """Every unit of the corpus, in a stable order, and what was skipped."""

    units: list[Unit]
    skipped: list[Skip]
    files: int
    bytes: int


def normalise(text: bytes) -> tuple[bytes, ...]:
    """Lines without indentation or a leading comment marker.

    Re-indenting a copy, or turning ``#`` comments into ``//`` ones, must not defeat
    detection; and a licence paragraph reads the same in every comment style, so the
    baseline's copy of it is recognised. Form feeds (PDF page breaks) end lines too.
    """
    return tuple(map(bytes.strip, _COMMENT_MARK.sub(b"", text.replace(b"\f", b"\n")).splitlines()))


def pieces(line: bytes) -> list[bytes]:
    """The keys of one normalised line: itself, or ``MAX_KEY_BYTES`` pieces of a long one."""
    if len(line) <= MAX_KEY_BYTES:
        return [line]
    return [line[i : i + MAX_KEY_BYTES] for i in range(0, len(line), MAX_KEY_BYTES)]


def is_binary(head: bytes) -> bool:
    """NUL bytes do not occur in text (UTF-16 text is read as binary: the scanner matches UTF-8)."""
    return b"\0" in head[:BINARY_PROBE_BYTES]


def walk(roots: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``(path, name)`` for every file under ``roots`` in a stable order; ``name`` is relative to
    the parent of its root, so two roots keep their own top folder in names."""
    for root in roots:
        root = os.path.abspath(root)
        base = os.path.dirname(root.rstrip(os.sep)) or root
        if not os.path.isdir(root):
            # A file named on the command line is read even through a link; links met while
            # walking are not (they would count a file twice, or leave the corpus).
            yield os.path.realpath(root), os.path.relpath(root, base)
            continue
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
            for name in sorted(names):
                path = os.path.join(folder, name)
                yield path, os.path.relpath(path, base)


def read_corpus(
    roots: Sequence[str], *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, limits: ScanLimits | None = None
) -> Corpus:
    """Read every file under ``roots`` into units; binary, huge and unreadable files are skipped.

    Raises:
        FileNotFoundError: a root does not exist (a typo must not build an empty pack).
    """
    for root in roots:
        if not os.path.exists(root):
            raise FileNotFoundError(root)
    limits = limits or ScanLimits()
    corpus = Corpus(units=[], skipped=[], files=0, bytes=0)
    for path, name in walk(roots):
        found = _read_file(path, name, max_file_bytes, limits)
        if isinstance(found, Skip):
            corpus.skipped.append(found)
            continue
        corpus.files += 1
        for unit in found:
            corpus.units.append(unit)
            corpus.bytes += sum(len(line) + 1 for line in unit.lines)
    return corpus


def _read_file(path: str, name: str, max_file_bytes: int, limits: ScanLimits) -> list[Unit] | Skip:
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            return Skip(name, "symbolic link")
        if not stat.S_ISREG(info.st_mode):
            return Skip(name, "not a regular file")
        if info.st_size > max_file_bytes:
            return Skip(name, f"larger than {max_file_bytes:,} bytes")
        with open(path, "rb") as f:
            data = f.read(max_file_bytes + 1)
    except OSError as exc:
        return Skip(name, f"unreadable: {exc.strerror or exc}")
    kind = sniff(data[:SNIFF_BYTES])
    if kind in CONTAINERS:
        try:
            units = list(_container_units(kind, io.BytesIO(data), name, Budget(limits), 1, max_file_bytes))
        except _ERRORS as exc:
            return Skip(name, f"cannot extract {kind.value}: {exc}")
        return units or Skip(name, f"no text in {kind.value}")
    if is_binary(data):
        return Skip(name, "binary")
    lines = normalise(data)
    if not any(lines):
        return Skip(name, "empty")
    return [Unit(name, _category(name), lines)]


def _container_units(
    kind: Kind, f: BinaryIO, name: str, budget: Budget, depth: int, max_bytes: int
) -> Iterator[Unit]:
    """The text units inside a container, recursing as the scanner does (bounded by its limits)."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    for item in members(kind, f, size, budget, prefix=name):
        budget.add_member()
        if item.problem is not None:
            continue
        data = item.data if item.data is not None else item.stream.read(max_bytes + 1)  # type: ignore[union-attr]
        if len(data) > max_bytes:
            continue
        if kind is Kind.PDF:
            unit_name, category, text = name, DOCUMENT, data
        elif item.is_xml:
            if not _OFFICE_TEXT_PART.fullmatch(item.name):
                continue
            unit_name, category, text = f"{name}!{item.name}", DOCUMENT, xml_to_text(data)
        else:
            inner = sniff(data[:SNIFF_BYTES])
            if inner in CONTAINERS:
                if depth < budget.limits.max_depth:
                    yield from _container_units(inner, io.BytesIO(data), f"{name}!{item.name}", budget, depth + 1, max_bytes)
                continue
            if is_binary(data):
                continue
            unit_name, category, text = f"{name}!{item.name}", _category(item.name), data
        lines = normalise(text)
        if any(lines):
            yield Unit(unit_name, category, lines)


def _category(name: str) -> str:
    return DOCUMENT if os.path.splitext(name)[1].lower() in PROSE_SUFFIXES else SOURCE_CODE


# Lines that could identify a unit ---------------------------------------------


def keys(unit: Unit) -> tuple[int, list[tuple[int, bytes]]]:
    """The unit's length in positions, and ``(position, key)`` for its distinctive keys.

    A position is a line, or one ``MAX_KEY_BYTES`` piece of a long line: a paragraph of a
    document weighs what as much text of code would.
    """
    found = []
    position = 0
    for line in unit.lines:
        for key in pieces(line):
            if distinctive(key):
                found.append((position, key))
            position += 1
    return position, found


def distinctive(text: bytes) -> bool:
    """Long enough, mostly words, not licence text, and with two words of its own (a lone
    name such as ``get_running_loop,`` in an import list is in anybody's code)."""
    if len(text) < MIN_KEY_BYTES or _LICENCE_WORDS.search(text):
        return False
    words = _WORD.findall(text)
    if sum(map(len, words)) * 2 < len(text.replace(b" ", b"")):
        return False
    return len({w for w in words if len(w) >= 3 and w.lower() not in _COMMON_WORDS}) >= 2


def imports_someone_elses(text: bytes, own: frozenset[str], known: frozenset[str]) -> bool:
    """An import of a module the corpus does not define, or one the baseline does: the same
    line is in everyone's code. Relative imports are the corpus's own."""
    found = _PY_IMPORT.match(text) or _JS_IMPORT.search(text) or _OTHER_IMPORT.match(text)
    if not found:
        return False
    module = next(g for g in found.groups() if g is not None).decode(errors="replace")
    if module.startswith("."):
        return False
    top = re.split(r"[./:]", module.removeprefix("node:").lstrip("@"))[0]
    return top not in own or top in known


def own_modules(units: list[Unit]) -> frozenset[str]:
    """Folder and file stems in the corpus: the modules its imports may name as its own."""
    names = {part.split(".")[0] for unit in units for part in re.split(r"[/\\!]", unit.name)}
    return frozenset(n for n in names if n)
