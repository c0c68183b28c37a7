"""``dlp-signatures fingerprint``: an index of a customer's code that finds renamed, reformatted excerpts.

What it does (docs/signatures.md tells the same to admins):

1. Every source file of the corpus (and every text member of a zip or tar in it) becomes
   normalised tokens (agent/scanning/tokens.py) and winnowed fingerprints
   (agent/scanning/winnow.py), each with the file and lines it came from. Documents
   (Markdown, text, Office, PDF) are left to ``build``: prose has no code tokens.
2. A fingerprint is dropped when its k-gram has fewer than ``MIN_DISTINCT`` distinct
   token classes (``I = I ; I = I ;`` is in everyone's code), when it is in more than
   ``common_files`` corpus files (the customer's own boilerplate), and when any file of
   the baseline holds the same k-gram (every k-gram of the baseline is compared, not
   only its winnowed ones, so common code is found wherever it sits).
3. The rest is written as a sorted, bucketed index (agent/scanning/fpindex.py).

The baseline is what ``build`` uses (this Python's standard library and site-packages)
plus the other code installed on the machine (C headers, global node modules, Go's
standard library) and ``--baseline`` folders. When much of the corpus is found there, the
summary says where: the customer's own package installed in site-packages would otherwise
silently empty the index.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from agent.events import SEVERITIES
from agent.scanning.budget import Budget
from agent.scanning.errors import LimitHit
from agent.scanning.extract import READ_ERRORS, members
from agent.scanning.fpindex import DEFAULT_CATEGORY as DEFAULT_CATEGORY
from agent.scanning.fpindex import DEFAULT_MIN_TOKENS, MAX_FILES, FingerprintIndex, FingerprintIndexError, write_index
from agent.scanning.fpindex import DEFAULT_SEVERITY as DEFAULT_SEVERITY
from agent.scanning.limits import ScanLimits
from agent.scanning.sniff import CONTAINERS, SNIFF_BYTES, Kind, sniff
from agent.scanning.tokens import Lexicon, tokenize
from agent.scanning.winnow import K, W, guarantee, kgram_hashes, winnow
from signatures import baseline as baseline_mod
from signatures.corpus import DEFAULT_MAX_FILE_BYTES, PROSE_SUFFIXES, is_binary, walk
from signatures.vocabulary import vocabulary

_EXTRACT_ERRORS: tuple[type[BaseException], ...] = (LimitHit, *READ_ERRORS)
MIN_DISTINCT = 5
"""Distinct token classes a k-gram needs to be kept."""
COMMON_FILES = 8
"""A fingerprint in more corpus files than this (or a 200th of them) is an idiom, not the customer's."""
MAX_PER_FILE = 4
"""Entries kept for one hash in one file (a repeated block says nothing more)."""
BASELINE_WARN_SHARE = 0.2
"""Warn when more than this share of the corpus's fingerprints is in the baseline."""
SOURCE_SUFFIXES = frozenset(
    """.py .pyi .pyx .js .mjs .cjs .jsx .ts .tsx .mts .cts .java .kt .kts .scala .groovy .c .h .cc .cpp .cxx .hpp .hh
    .hxx .inl .m .mm .go .rs .cs .fs .vb .swift .rb .php .pl .pm .lua .sh .bash .sql .r .dart .erl .ex .exs .clj
    .vue .svelte .proto .gradle""".split()
)
"""Files of the baseline that are read (the corpus reads every text file whatever its name)."""
LANGUAGES = {
    ".py": "Python", ".pyi": "Python", ".js": "JavaScript", ".mjs": "JavaScript", ".cjs": "JavaScript",
    ".jsx": "JavaScript", ".ts": "TypeScript", ".tsx": "TypeScript", ".java": "Java", ".kt": "Kotlin",
    ".c": "C", ".h": "C/C++ header", ".cc": "C++", ".cpp": "C++", ".cxx": "C++", ".hpp": "C++", ".go": "Go",
    ".rs": "Rust", ".cs": "C#", ".swift": "Swift", ".rb": "Ruby", ".php": "PHP", ".scala": "Scala", ".sh": "Shell",
}  # fmt: skip
_OTHER_INSTALLED_CODE = (
    "/usr/include",
    "/usr/local/include",
    "/usr/lib/node_modules",
    "/usr/local/lib/node_modules",
    "/usr/lib/go/src",
    "/usr/local/go/src",
)


@dataclasses.dataclass
class FingerprintReport:
    """What a fingerprint build did, for the summary the CLI prints and for benchmarks."""

    out: str
    name: str
    files: int = 0
    bytes: int = 0
    tokens: int = 0
    languages: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    selected: int = 0
    dropped_plain: int = 0
    dropped_common: int = 0
    dropped_baseline: int = 0
    kept: int = 0
    baseline_files: int = 0
    baseline_bytes: int = 0
    baseline_places: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    index_bytes: int = 0
    min_tokens: int = DEFAULT_MIN_TOKENS
    common_files: int = 0
    vocabulary: int = 0
    seconds: float = 0.0

    @property
    def index_path(self) -> str:
        return self.out

    @property
    def bytes_per_fingerprint(self) -> float:
        return self.index_bytes / self.kept if self.kept else 0.0

    def baseline_share(self) -> float:
        considered = self.selected - self.dropped_plain - self.dropped_common
        return self.dropped_baseline / considered if considered > 0 else 0.0

    def summary(self) -> list[str]:
        """Lines a person reads after a build."""
        langs = ", ".join(f"{lang} {n:,}" for lang, n in self.languages.most_common())
        lines = [
            f"corpus: {self.files:,} files, {self.bytes / 1e6:.1f} MB, {self.tokens:,} tokens ({langs or 'no code'})",
        ]
        if self.skipped:
            reasons = collections.Counter(reason.split(":")[0] for _, reason in self.skipped)
            lines.append(f"skipped: {len(self.skipped):,} files (" + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) + ")")
            lines += _some([f"{path}: {reason}" for path, reason in self.skipped])
        lines.append(
            f"fingerprints: {self.kept:,} kept of {self.selected:,}; dropped {self.dropped_baseline:,} found in the baseline"
            f" ({self.baseline_files:,} files, {self.baseline_bytes / 1e6:.0f} MB), {self.dropped_common:,} in more than"
            f" {self.common_files} corpus files, {self.dropped_plain:,} too plain"
        )
        if self.baseline_share() > BASELINE_WARN_SHARE:
            places = ", ".join(f"{place} ({n:,})" for place, n in self.baseline_places.most_common(5))
            lines.append(
                f"warning: {self.baseline_share():.0%} of the corpus's fingerprints are in the baseline, mostly in {places}:"
                " if that is the customer's own code installed there, pass --no-default-baseline or remove it"
            )
        lines.append(f"vocabulary: {self.vocabulary:,} names the corpus uses but never defines keep their own token")
        lines.append(
            f"index: {self.index_bytes / 1e6:.1f} MB, {self.bytes_per_fingerprint:.1f} bytes a fingerprint;"
            f" a match needs {self.min_tokens} tokens in order from one file"
        )
        lines.append(
            f"guarantee: any shared run of {guarantee()} tokens (about {guarantee() / 7:.0f} lines of code) yields a"
            f" fingerprint; runs under {K} tokens are never matched"
        )
        lines.append(f"wrote {self.out} in {self.seconds:.1f} s")
        return lines


def _some(items: list[str], shown: int = 5) -> list[str]:
    more = [f"  ... and {len(items) - shown:,} more"] if len(items) > shown else []
    return [f"  {item}" for item in items[:shown]] + more


MAX_NAME_CHARS = 1024


def reportable(name: str) -> str:
    """A corpus file's name as events carry it: valid UTF-8 (undecodable bytes become U+FFFD) and
    at most ``MAX_NAME_CHARS`` characters (the end kept), so the collector never refuses a match."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text if len(text) <= MAX_NAME_CHARS else "..." + text[-(MAX_NAME_CHARS - 3) :]


def default_roots() -> list[str]:
    """``build``'s default baseline plus the other code installed on this machine."""
    roots = baseline_mod.default_roots()
    seen = {os.path.realpath(r) for r in roots}
    for path in _OTHER_INSTALLED_CODE:
        if os.path.isdir(path) and os.path.realpath(path) not in seen:
            roots.append(path)
            seen.add(os.path.realpath(path))
    return roots


def build_index(
    corpus: Sequence[str],
    *,
    name: str,
    out: str,
    baseline_roots: Sequence[str] = (),
    exclude: Sequence[str] = (),
    min_tokens: int | None = None,
    severity: str = DEFAULT_SEVERITY,
    category: str = DEFAULT_CATEGORY,
    common_files: int | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    progress: Callable[[str], None] = lambda _: None,
) -> FingerprintReport:
    """Fingerprint ``corpus``, drop what the baseline and the corpus share widely, write ``out``.

    Raises:
        ValueError: bad arguments, or no fingerprint is left (nothing to write).
        FileNotFoundError: a corpus root does not exist.
        OSError: ``out`` cannot be written.
    """
    started = time.perf_counter()
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
    if not name or len(name) > 200:
        raise ValueError("the index needs a name of 1 to 200 characters")
    min_tokens = DEFAULT_MIN_TOKENS if min_tokens is None else min_tokens
    if min_tokens < K:
        raise ValueError(f"--min-tokens must be at least {K} (one k-gram)")
    for root in corpus:
        if not os.path.exists(root):
            raise FileNotFoundError(root)
    report = FingerprintReport(out=out, name=name, min_tokens=min_tokens)
    progress(f"reading corpus: {', '.join(corpus)}")
    texts = list(_corpus_texts(corpus, max_file_bytes, report))
    if len(texts) > MAX_FILES:
        raise ValueError(f"more than {MAX_FILES:,} files: split the corpus into several indexes")
    names_used = vocabulary(text for _, text in texts)
    lexicon = Lexicon(names_used)
    names: list[str] = []
    parts: list[tuple[np.ndarray, ...]] = []
    for unit_name, text in texts:
        tokens = tokenize(text, lexicon)
        report.files += 1
        report.bytes += len(text)
        report.tokens += len(tokens)
        report.languages[LANGUAGES.get(os.path.splitext(unit_name.split("!")[-1])[1].lower(), "other")] += 1
        prints = winnow(tokens)
        if len(prints) == 0:
            continue
        report.selected += len(prints)
        plain = _distinct_classes(tokens.kinds, prints.positions) < MIN_DISTINCT
        report.dropped_plain += int(plain.sum())
        positions = prints.positions[~plain]
        hashes = prints.hashes[~plain]
        first = tokens.lines[positions]
        last = tokens.lines[positions + (K - 1)]
        hashes, first, last, positions = _cap_repeats(hashes, first, last, positions)
        file_number = np.full(len(hashes), len(names), dtype=np.uint32)
        names.append(reportable(unit_name))
        parts.append((hashes, file_number, first, last - first, positions))
    del texts
    report.vocabulary = len(names_used)
    if not parts:
        raise ValueError("no source code with enough tokens in the corpus: nothing to index")
    hashes, files, first, spans, positions = (np.concatenate(column) for column in zip(*parts))
    del parts
    hashes, files, first, spans, positions = _drop_common(report, hashes, files, first, spans, positions, common_files=common_files)
    if baseline_roots:
        progress(f"reading baseline: {len(baseline_roots)} folders")
        found = _in_baseline(report, hashes, baseline_roots, lexicon, exclude=[*exclude, *corpus])
        report.dropped_baseline = int(found.sum())
        hashes, files, first, spans, positions = (column[~found] for column in (hashes, files, first, spans, positions))
    report.kept = len(hashes)
    if report.kept == 0:
        where = ", ".join(place for place, _ in report.baseline_places.most_common(3))
        raise ValueError(
            "every fingerprint of the corpus is common or in the baseline"
            + (f" (found in {where}: is the corpus installed there? pass --no-default-baseline)" if where else "")
            + ": nothing to index"
        )
    meta = {
        "name": name,
        "severity": severity,
        "category": category,
        "min_tokens": min_tokens,
        "corpus": {"files": report.files, "bytes": report.bytes, "tokens": report.tokens, "languages": dict(report.languages)},
    }
    report.index_bytes = write_index(
        out, hashes=hashes, files=files, first_lines=first, spans=spans, positions=positions, file_names=names, k=K, w=W,
        meta=meta,
        vocabulary=names_used,
    )
    try:
        FingerprintIndex.load(out)
    except FingerprintIndexError as exc:
        os.unlink(out)
        raise ValueError(f"the index written does not load (please report it): {exc}") from None
    report.seconds = time.perf_counter() - started
    return report


def _corpus_texts(roots: Sequence[str], max_file_bytes: int, report: FingerprintReport) -> Iterator[tuple[str, bytes]]:
    """``(name, text)`` of every source file, and of every text member of an archive, in name order."""
    limits = ScanLimits()
    for path, name in walk(roots):
        if os.path.splitext(name)[1].lower() in PROSE_SUFFIXES:
            report.skipped.append((name, "document (use 'build' for documents)"))
            continue
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                report.skipped.append((name, "not a regular file"))
                continue
            if info.st_size > max_file_bytes:
                report.skipped.append((name, f"larger than {max_file_bytes:,} bytes"))
                continue
            with open(path, "rb") as f:
                data = f.read(max_file_bytes + 1)
        except OSError as exc:
            report.skipped.append((name, f"unreadable: {exc.strerror or exc}"))
            continue
        kind = sniff(data[:SNIFF_BYTES])
        if kind in CONTAINERS:
            yield from _archive_texts(kind, data, name, limits, max_file_bytes, report)
        elif is_binary(data):
            report.skipped.append((name, "binary"))
        elif data.strip():
            yield name, data


def _archive_texts(
    kind: Kind, data: bytes, name: str, limits: ScanLimits, max_bytes: int, report: FingerprintReport
) -> Iterator[tuple[str, bytes]]:
    """Text members of an archive in the corpus (one level: a release tarball of the code)."""
    try:
        for item in members(kind, io.BytesIO(data), len(data), Budget(limits), prefix=name):
            if item.problem is not None or item.is_xml:
                continue
            if os.path.splitext(item.name)[1].lower() in PROSE_SUFFIXES:
                continue
            body = item.data if item.data is not None else item.stream.read(max_bytes + 1)  # type: ignore[union-attr]
            if len(body) <= max_bytes and not is_binary(body) and sniff(body[:SNIFF_BYTES]) not in CONTAINERS and body.strip():
                yield f"{name}!{item.name}", body
    except _EXTRACT_ERRORS as exc:
        report.skipped.append((name, f"cannot extract {kind.value}: {exc}"))


def _distinct_classes(kinds: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """How many distinct token classes each k-gram starting at ``positions`` has."""
    grams = np.sort(np.lib.stride_tricks.sliding_window_view(kinds, K)[positions], axis=1)
    return 1 + (np.diff(grams.astype(np.int32), axis=1) != 0).sum(axis=1)


def _cap_repeats(hashes: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """At most ``MAX_PER_FILE`` entries of one hash in one file (the first ones)."""
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_hashes)) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    keep = np.sort(order[rank < MAX_PER_FILE])
    return (hashes[keep], *(column[keep] for column in columns))


def _drop_common(
    report: FingerprintReport, hashes: np.ndarray, files: np.ndarray, *columns: np.ndarray, common_files: int | None
) -> tuple[np.ndarray, ...]:
    """Leave out hashes found in more than ``common_files`` corpus files."""
    report.common_files = common_files if common_files is not None else max(COMMON_FILES, report.files // 200)
    pairs = np.unique((hashes << np.uint64(24)) | files.astype(np.uint64))
    unique_hashes, spread = np.unique(pairs >> np.uint64(24), return_counts=True)
    common = unique_hashes[spread > report.common_files]
    drop = np.isin(hashes, common)
    report.dropped_common = int(drop.sum())
    keep = ~drop
    return (hashes[keep], files[keep], *(column[keep] for column in columns))


def _in_baseline(
    report: FingerprintReport, hashes: np.ndarray, roots: Sequence[str], lexicon: Lexicon, *, exclude: Sequence[str]
) -> np.ndarray:
    """Which of ``hashes`` occur as any k-gram of a baseline source file; counts where, for the warning."""
    wanted = np.unique(hashes)
    present = np.zeros(len(wanted), dtype=bool)
    for root, path in baseline_mod.source_files(roots, exclude=exclude, suffixes=SOURCE_SUFFIXES):
        try:
            if os.path.getsize(path) > baseline_mod.MAX_BASELINE_FILE_BYTES:
                continue
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if is_binary(data):
            continue
        report.baseline_files += 1
        report.baseline_bytes += len(data)
        grams = kgram_hashes(tokenize(data, lexicon).kinds)
        if len(grams) == 0:
            continue
        at = np.searchsorted(wanted, grams)
        at[at == len(wanted)] = 0
        hit = at[wanted[at] == grams]
        if len(hit):
            fresh = int((~present[hit]).sum())
            if fresh:
                present[hit] = True
                report.baseline_places[baseline_mod.place_of(root, path)] += fresh
    return np.isin(hashes, wanted[present])
