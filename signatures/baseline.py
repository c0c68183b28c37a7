"""Common code a corpus is compared with: which of its lines it holds, and how often YARA atoms occur in it.

The default baseline is the code every admin's machine already has: the running
interpreter's standard library and its installed site-packages (1-3 million lines).
It is streamed once and never held: only the corpus's own candidate keys are kept in
a set, and each baseline line is looked up in it (``set.intersection`` hashes every
line in C, so memory stays at the size of the corpus whatever the baseline's size).
Along the way a deterministic sample (1 KB from the middle of each file, up to 8 MB) is kept
to estimate how often YARA atoms occur in ordinary text and how fast a pack scans it.

An atom is the 4-byte piece of a literal string that libyara searches for; each place
it occurs in scanned data costs a comparison of the whole string. A pack of thousands
of strings is slow when their atoms are common ("self", "    "), so the builder prices
strings by how often ``yara_atom`` of them occurs in the sample.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import os
import re
import site
import sys
import sysconfig
import time
from collections.abc import Collection, Iterable, Sequence

from signatures.corpus import MAX_KEY_BYTES, is_binary, normalise, pieces

DEFAULT_SAMPLE_BYTES = 8 * 1024 * 1024
SAMPLE_SLICE_BYTES = 1024
MAX_BASELINE_FILE_BYTES = 4 * 1024 * 1024
"""Larger files in site-packages are data (Unicode tables, fixtures), not code anyone copies."""

# The stdlib folder may hold another interpreter's site-packages: only this one's own count.
_NOT_BASELINE_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages"})
_ANY_FOUR = re.compile(rb"....", re.S)
_MODULE_FILE = re.compile(r"([A-Za-z_]\w*)(?:\.py|\.pyi|\.cpython-[^.]*\.so|\.so|\.pyd)?")


@dataclasses.dataclass
class Baseline:
    """What one pass over the baseline learned.

    Attributes:
        present: the candidate keys that occur as lines of the baseline.
        modules: top-level module names found in the baseline folders (for import lines).
        sample: up to ``DEFAULT_SAMPLE_BYTES`` of baseline text, the same for the same inputs.
        files, bytes, lines: what was read.
        skipped: baseline files left out (binary, too large, unreadable).
        seconds: how long the pass took.
    """

    present: set[bytes]
    modules: frozenset[str]
    sample: bytes
    places: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    """Baseline folders (a root and its first folder) by how many corpus keys were first found there."""
    files: int = 0
    bytes: int = 0
    lines: int = 0
    skipped: int = 0
    seconds: float = 0.0

    # ``bytes`` is a field of this class, so the type is named through builtins here.
    def atom_counts(self, atoms: Collection[builtins.bytes]) -> collections.Counter[builtins.bytes]:
        """How often each of ``atoms`` (4 bytes each) occurs in the sample."""
        counts: collections.Counter[builtins.bytes] = collections.Counter()
        if not atoms:
            return counts
        wanted = atoms.__contains__
        block = 1 << 20
        for start in range(0, len(self.sample), block):
            piece = self.sample[start : start + block + 3]
            for shift in range(4):
                # Four strided passes of non-overlapping 4-byte chunks see every window once, in C.
                counts.update(filter(wanted, _ANY_FOUR.findall(piece, shift)))
        return counts


def default_roots() -> list[str]:
    """The standard library and site-packages of the running interpreter, each once."""
    paths = sysconfig.get_paths()
    candidates = [paths["stdlib"], paths["purelib"], paths["platlib"], *site.getsitepackages()]
    if site.ENABLE_USER_SITE and site.USER_SITE:
        candidates.append(site.USER_SITE)
    roots: list[str] = []
    for path in candidates:
        if path and os.path.isdir(path) and os.path.realpath(path) not in {os.path.realpath(r) for r in roots}:
            roots.append(path)
    return roots


def scan(
    roots: Sequence[str],
    wanted: set[bytes],
    *,
    exclude: Iterable[str] = (),
    sample_bytes: int = DEFAULT_SAMPLE_BYTES,
    max_file_bytes: int = MAX_BASELINE_FILE_BYTES,
) -> Baseline:
    """Stream the files under ``roots`` (minus ``exclude``) and find which ``wanted`` keys they hold.

    ``exclude`` takes folders or files: the corpus itself, when it lives inside a
    baseline folder, must not count as "common code".
    """
    start = time.perf_counter()
    excluded = frozenset(os.path.realpath(p).rstrip(os.sep) for p in exclude)
    seen_roots = {os.path.realpath(r) for r in roots}
    result = Baseline(present=set(), modules=frozenset(sys.stdlib_module_names), sample=b"")
    sample = bytearray()
    modules: set[str] = set(result.modules)
    for root in roots:
        for path in _files(root, seen_roots, excluded, modules):
            try:
                if os.path.getsize(path) > max_file_bytes:
                    result.skipped += 1
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                result.skipped += 1
                continue
            if is_binary(data):
                result.skipped += 1
                continue
            found = _take(result, data, wanted)
            if found:
                result.places[place_of(root, path)] += found
            if len(sample) < sample_bytes:
                sample += _middle_slice(data)
    result.sample = bytes(sample[:sample_bytes])
    result.modules = frozenset(modules)
    result.seconds = time.perf_counter() - start
    return result


def source_files(
    roots: Sequence[str], *, exclude: Iterable[str] = (), suffixes: Collection[str] = ()
) -> Iterable[tuple[str, str]]:
    """``(root, path)`` of the files under ``roots`` (minus ``exclude``) whose suffix is one of ``suffixes``
    (all files when empty), in a stable order; the same walk as ``scan``."""
    excluded = frozenset(os.path.realpath(p).rstrip(os.sep) for p in exclude)
    seen_roots = {os.path.realpath(r) for r in roots}
    for root in roots:
        for path in _files(root, seen_roots, excluded, set()):
            if not suffixes or os.path.splitext(path)[1].lower() in suffixes:
                yield root, path


def _files(root: str, roots: set[str], excluded: frozenset[str], modules: set[str]) -> Iterable[str]:
    """Files under ``root`` in a stable order; other roots nested in it are walked on their own."""
    real_root = os.path.realpath(root)
    if _inside(real_root, excluded):
        return
    if os.path.isfile(root):
        yield root
        return
    for folder, dirs, names in os.walk(root):
        real = os.path.realpath(folder)
        dirs[:] = [
            d
            for d in sorted(dirs)
            if d not in _NOT_BASELINE_DIRS and os.path.join(real, d) not in roots and os.path.join(real, d) not in excluded
        ]
        if real in roots:
            # A site-packages (or stdlib) folder names the modules people import.
            modules.update(m[1] for m in map(_MODULE_FILE.fullmatch, [*dirs, *names]) if m)
        for name in sorted(names):
            full = os.path.join(real, name)
            if full in excluded:
                continue
            if os.path.islink(full) and _inside(os.path.realpath(full), excluded):
                continue  # npm's .bin links into packages: the corpus must not be its own baseline
            yield os.path.join(folder, name)


def _inside(path: str, excluded: frozenset[str]) -> bool:
    return any(path == e or path.startswith(e + os.sep) for e in excluded)


def _take(result: Baseline, data: bytes, wanted: set[bytes]) -> int:
    """Add the wanted keys among ``data``'s lines to ``result.present``; returns how many were new."""
    lines = normalise(data)
    result.files += 1
    result.bytes += len(data)
    result.lines += len(lines)
    before = len(result.present)
    result.present.update(wanted.intersection(lines))
    for line in lines:
        if len(line) > MAX_KEY_BYTES:
            result.present.update(wanted.intersection(pieces(line)))
    return len(result.present) - before


def place_of(root: str, path: str) -> str:
    """The baseline folder a file belongs to, as a person names it: the root and its first folder."""
    relative = os.path.relpath(path, root)
    top = relative.split(os.sep)[0]
    return os.path.join(root, top) if top != relative else root


def _middle_slice(data: bytes) -> bytes:
    """About ``SAMPLE_SLICE_BYTES`` of whole lines from the middle of a file (bodies, not headers)."""
    if len(data) <= SAMPLE_SLICE_BYTES:
        return data if data.endswith(b"\n") else data + b"\n"
    start = data.find(b"\n", (len(data) - SAMPLE_SLICE_BYTES) // 2) + 1
    end = data.find(b"\n", start + SAMPLE_SLICE_BYTES)
    return data[start : end + 1 if end >= 0 else len(data)] + (b"" if end >= 0 else b"\n")


# libyara's atom quality (libyara/atoms.c, yr_atoms_heuristic_quality): bytes 00 20 CC FF
# score 12, letters 18, others 20, plus 2 per distinct byte; four equal common bytes are
# penalised. For a literal string it keeps the first 4-byte window of highest quality.
_BYTE_QUALITY = bytes(
    12 if b in (0x00, 0x20, 0xCC, 0xFF) else 18 if (0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A) else 20 for b in range(256)
)
_COMMON_BYTES = frozenset((0x00, 0x20, 0x90, 0xCC, 0xFF))
_BEST_QUALITY = 4 * 20 + 2 * 4


def yara_atom(text: bytes) -> bytes:
    """The 4 bytes libyara will search for to find ``text`` (a literal string without modifiers)."""
    quality = text.translate(_BYTE_QUALITY)
    best, best_at = -1, 0
    for i in range(len(text) - 3):
        window = text[i : i + 4]
        distinct = len(set(window))
        score = quality[i] + quality[i + 1] + quality[i + 2] + quality[i + 3]
        score += -40 if distinct == 1 and window[0] in _COMMON_BYTES else 2 * distinct
        if score > best:
            best, best_at = score, i
            if score == _BEST_QUALITY:
                break
    return text[best_at : best_at + 4]
