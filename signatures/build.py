"""``dlp-signatures build``: a YARA pack that detects copies of a customer's code and documents.

How strings are chosen (docs/signatures.md tells the same to admins):

1. Every unit of the corpus (a file, or a text part of a document or archive; see
   corpus.py) is cut into lines without indentation or comment markers. A line is a
   *candidate* when it is 16 bytes or more, mostly words, not licence text, has two
   words besides keywords and everyday names, and is not an import of somebody else's
   module. Lines over 80 bytes count as 80-byte pieces.
2. Candidates that are a line of the baseline (stdlib, site-packages, ``--baseline``
   folders) are dropped: that is common code, and strings from it would fire on it.
3. Each candidate gets a price: a line found in several corpus units costs much more
   (it is the customer's boilerplate, and cannot tell the files apart), a short line
   costs more (short lines are what unrelated code shares by accident), and so does a
   line whose YARA atom is frequent in the baseline sample (every occurrence of an atom
   in scanned data is a comparison: common atoms are what make big packs slow).
4. Each unit gets one rule, ``2 of them``. Its strings are picked walking down the
   unit: the next pick is the cheapest candidate in the last quarter of the reach of
   ``gap`` positions from the previous one (or anywhere in that reach, or the next one
   after it), so picks are at most ``gap`` apart wherever the unit has candidates.
   ``gap`` is the smallest, from 8 up, that keeps the pack within ``--max-strings``, so
   an excerpt of ``2 * gap`` lines holds two strings, and a whole file holds them all.
   A unit with a single candidate gets no rule: one line is too little to go on.

Output is deterministic for the same inputs: units are read in name order, picks are
made by position and price, never by hash order, and the pack carries no date.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence

from agent.events import SEVERITIES
from agent.scanning import Scanner, load_rules
from signatures import baseline as baseline_mod
from signatures.corpus import DEFAULT_MAX_FILE_BYTES, Corpus, Unit, imports_someone_elses, keys, own_modules, read_corpus

DEFAULT_MAX_STRINGS = 8000
DEFAULT_SEVERITY = "high"
GOOD_STRING_BYTES = 32
MIN_GAP = 8
STRINGS_PER_MATCH = 2
BASELINE_WARN_SHARE = 0.2
"""Warn when more than this share of the corpus's candidate lines is in the baseline."""
EXCERPT_LINES = 60
"""Excerpts this long should fire; the summary warns when the budget spaces strings wider."""
MEASURE_SECONDS = 1.0
_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]+")


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    """A key of a unit that may become a string; lower ``price`` is better."""

    position: int
    text: bytes
    price: int


@dataclasses.dataclass(frozen=True)
class Rule:
    """One unit's rule: its strings in the unit's order."""

    unit: Unit
    strings: tuple[bytes, ...]


@dataclasses.dataclass
class Report:
    """What a build did, for the summary the CLI prints and for benchmarks."""

    out: str
    corpus: Corpus
    baseline: baseline_mod.Baseline | None
    rules: list[Rule]
    gap: int
    max_strings: int
    uncovered: list[str]
    seconds: float = 0.0
    speed_mb_s: float | None = None
    speed_sample: str = ""
    fired_on_sample: tuple[str, ...] = ()
    candidates: int = 0
    """Distinct candidate lines of the corpus before the baseline was consulted."""

    @property
    def strings(self) -> int:
        return sum(len(r.strings) for r in self.rules)

    def summary(self) -> list[str]:
        """Lines a person reads after a build."""
        c = self.corpus
        lines = [f"corpus: {c.files:,} files read, {len(c.units):,} units of text, {c.bytes / 1e6:.1f} MB"]
        if c.skipped:
            reasons = collections.Counter(s.reason.split(":")[0] for s in c.skipped)
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
            lines.append(f"skipped: {len(c.skipped):,} files ({detail})")
            lines += _some([f"{s.path}: {s.reason}" for s in c.skipped])
        b = self.baseline
        if b is None:
            lines.append("baseline: none")
        else:
            lines.append(
                f"baseline: {b.files:,} files, {b.lines:,} lines, {b.bytes / 1e6:.0f} MB read in {b.seconds:.1f} s;"
                f" {len(b.present):,} corpus lines found there and left out"
            )
        lines.append(
            f"built: {len(self.rules):,} rules, {self.strings:,} strings (max {self.max_strings:,}),"
            f" {len(self.rules):,} of {len(c.units):,} units covered, a string every {self.gap} lines or fewer"
        )
        if self.gap * STRINGS_PER_MATCH > EXCERPT_LINES or (self.uncovered and self.strings >= self.max_strings):
            lines.append(
                f"excerpts of fewer than {self.gap * STRINGS_PER_MATCH} lines may be missed: this corpus is too large for"
                " YARA strings (raising --max-strings slows every scan); build a fingerprint index instead"
                " ('dlp-signatures fingerprint', docs/fingerprints.md), whose look-ups cost the same at any corpus size"
                " and which finds renamed and reformatted copies"
            )
        if b is not None and self.candidates and len(b.present) > BASELINE_WARN_SHARE * self.candidates:
            places = ", ".join(f"{place} ({n:,})" for place, n in b.places.most_common(5))
            lines.append(
                f"warning: {len(b.present) / self.candidates:.0%} of the corpus's candidate lines are in the baseline,"
                f" mostly in {places}: if that is the customer's own code installed there, pass --no-default-baseline"
                " or remove it"
            )
        if self.uncovered:
            lines.append(f"not covered, fewer than {STRINGS_PER_MATCH} distinctive lines or no room: {len(self.uncovered):,}")
            lines += _some(self.uncovered)
        if self.speed_mb_s is not None:
            lines.append(f"expected scan speed: {self.speed_mb_s:.0f} MB/s per core ({self.speed_sample})")
            if self.baseline is not None:
                lines.append(f"rules that fired on the baseline sample: {len(self.fired_on_sample)}")
                lines += _some(list(self.fired_on_sample))
        lines.append(f"wrote {self.out} in {self.seconds:.1f} s")
        return lines


def _some(items: list[str], shown: int = 5) -> list[str]:
    more = [f"  ... and {len(items) - shown:,} more"] if len(items) > shown else []
    return [f"  {item}" for item in items[:shown]] + more


def build_pack(
    roots: Sequence[str],
    *,
    name: str,
    out: str,
    baseline_roots: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_strings: int = DEFAULT_MAX_STRINGS,
    severity: str = DEFAULT_SEVERITY,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    measure_seconds: float = MEASURE_SECONDS,
    progress: Callable[[str], None] = lambda _: None,
) -> Report:
    """Read ``roots``, choose strings, write the pack to ``out``, compile it and time it.

    Args:
        baseline_roots: folders (or files) of common code: ``baseline.default_roots()``
            plus the admin's own, for what the CLI does by default.
        exclude: paths under the baseline roots to leave out (the corpus always is).
        measure_seconds: how long to scan the baseline sample for the expected speed (0: not).
        progress: told, in a line of text, of each slow step.

    Raises:
        ValueError: bad arguments, or no unit has two distinctive lines (nothing to write).
        FileNotFoundError: a corpus root does not exist.
        OSError: ``out`` cannot be written.
        agent.scanning.RuleError: the pack written does not compile (a bug of this module).
    """
    started = time.perf_counter()
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
    if max_strings < STRINGS_PER_MATCH:
        raise ValueError(f"max strings must be at least {STRINGS_PER_MATCH}")
    progress(f"reading corpus: {', '.join(roots)}")
    corpus = read_corpus(roots, max_file_bytes=max_file_bytes)
    found = [(unit, *keys(unit)) for unit in corpus.units]
    spread = collections.Counter(text for _, _, unit_keys in found for text in {t for _, t in unit_keys})
    base = None
    if baseline_roots:
        progress(f"reading baseline: {len(baseline_roots)} folders")
        base = baseline_mod.scan(baseline_roots, set(spread), exclude=[*exclude, *roots])
    present = base.present if base is not None else set()
    known = base.modules if base is not None else frozenset()
    own = own_modules(corpus.units)
    atoms = {text: baseline_mod.yara_atom(text) for text in spread if text not in present}
    hits = base.atom_counts(set(atoms.values())) if base is not None else collections.Counter[bytes]()
    per_unit = [
        (
            unit,
            span,
            [
                Candidate(position, text, price(text, spread[text], hits[atoms[text]]))
                for position, text in unit_keys
                if text not in present and not imports_someone_elses(text, own, known)
            ],
        )
        for unit, span, unit_keys in found
    ]
    gap, picks = fit(per_unit, max_strings)
    rules = [Rule(unit, tuple(c.text for c in chosen)) for (unit, _, _), chosen in zip(per_unit, picks) if chosen]
    if not rules:
        raise ValueError("no file of the corpus has two distinctive lines: nothing to build (is it all in the baseline?)")
    uncovered = [unit.name for (unit, _, _), chosen in zip(per_unit, picks) if not chosen]
    _write(out, render(rules, corpus=name, severity=severity))
    report = Report(out, corpus, base, rules, gap, max_strings, uncovered, candidates=len(spread))
    progress("compiling and measuring the pack")
    scanner = Scanner(load_rules(out))
    if measure_seconds > 0:
        sample, label = (base.sample, "baseline sample") if base is not None and base.sample else (_corpus_text(corpus), "corpus text")
        report.speed_mb_s, fired = measure_speed(scanner, sample, measure_seconds)
        report.speed_sample = f"{label}, {len(sample) / 1e6:.1f} MB"
        report.fired_on_sample = tuple(sorted(fired))
    report.seconds = time.perf_counter() - started
    return report


def price(text: bytes, units: int, atom_hits: int) -> int:
    """Lower is better: in one unit only, long, with an atom rare in ordinary text.

    ``atom_hits`` counts the atom in the baseline sample (up to 8 MB); past 2,000 hits a
    string is as bad as it gets, about as costly as being 40 bytes short.
    """
    return 1000 * (units - 1) + 6 * max(0, GOOD_STRING_BYTES - len(text)) + min(atom_hits, 2000) // 8


# Choosing --------------------------------------------------------------------


def fit(per_unit: list[tuple[Unit, int, list[Candidate]]], max_strings: int) -> tuple[int, list[list[Candidate]]]:
    """The smallest gap whose picks fit in ``max_strings``, and those picks.

    When even the widest gap (two strings per unit) does not fit, units are covered in
    corpus order until the budget is spent.
    """

    def picks_at(gap: int) -> list[list[Candidate]]:
        return [pick(candidates, span, gap) for _, span, candidates in per_unit]

    low, high = MIN_GAP, max([MIN_GAP, *(span + 1 for _, span, _ in per_unit)])
    while low < high:
        middle = (low + high) // 2
        if sum(map(len, picks_at(middle))) <= max_strings:
            high = middle
        else:
            low = middle + 1
    picks = picks_at(low)
    total = 0
    for index, chosen in enumerate(picks):
        if total + len(chosen) > max_strings:
            picks[index] = chosen = []
        total += len(chosen)
    return low, picks


def pick(candidates: list[Candidate], span: int, gap: int) -> list[Candidate]:
    """Picks at most ``gap`` positions apart wherever the unit has candidates (see the module
    docstring); none when fewer than ``STRINGS_PER_MATCH`` can be had.

    A candidate that repeats, contains or is contained in an earlier pick is passed over:
    one line matching two strings would satisfy ``2 of them`` on its own.
    """
    chosen: list[Candidate] = []
    last, i = -1, 0
    while i < len(candidates) and last + gap < span:
        j = i
        while j < len(candidates) and candidates[j].position <= last + gap:
            j += 1
        late = [c for c in candidates[i:j] if c.position > last + (3 * gap) // 4]
        best = _cheapest_usable(late, chosen) or _cheapest_usable(candidates[i:j], chosen)
        best = best or next((c for c in candidates[j:] if _usable(c, chosen)), None)
        if best is None:
            break
        chosen.append(best)
        last = best.position
        while i < len(candidates) and candidates[i].position <= last:
            i += 1
    if len(chosen) < STRINGS_PER_MATCH:
        for c in sorted(candidates, key=lambda c: c.price):
            if len(chosen) < STRINGS_PER_MATCH and _usable(c, chosen):
                chosen.append(c)
        chosen.sort(key=lambda c: c.position)
    return chosen if len(chosen) >= STRINGS_PER_MATCH else []


def _cheapest_usable(stretch: list[Candidate], chosen: list[Candidate]) -> Candidate | None:
    return next((c for c in sorted(stretch, key=lambda c: c.price) if _usable(c, chosen)), None)


def _usable(candidate: Candidate, chosen: list[Candidate]) -> bool:
    return not any(candidate.text in c.text or c.text in candidate.text for c in chosen)


# Output ----------------------------------------------------------------------


def render(rules: list[Rule], *, corpus: str, severity: str, wide: bool = True) -> str:
    """The pack: a header comment and one rule per covered unit, named after the corpus.

    With ``wide`` every string also matches as UTF-16LE (``ascii wide``), so a copy saved
    by a Windows editor or PowerShell's ``>`` still fires without a decode pass; measured
    on this repository's code it costs little (docs/scan.md, "Encoded copies").
    """
    modifiers = " ascii wide" if wide else ""
    slug = identifier(corpus)[:40]
    corpus_text = yara_text(corpus.encode())
    parts = [
        f"// Built by dlp-signatures build from corpus {corpus_text}:"
        f" {len(rules)} rules, {sum(len(r.strings) for r in rules)} strings.\n"
        f"// Each rule fires on a copy of one file of the corpus, or an excerpt of it: {STRINGS_PER_MATCH}\n"
        "// of its distinctive lines, wherever they are and however they are indented.\n"
    ]
    for index, rule in enumerate(rules):
        unit_name = yara_text(rule.unit.name.encode())
        strings = "\n".join(f'        $s{n} = "{yara_text(s)}"{modifiers}' for n, s in enumerate(rule.strings))
        parts.append(
            f"rule {slug}_{index:05d}_{identifier(os.path.basename(rule.unit.name))[:40]}\n{{\n    meta:\n"
            f'        severity = "{severity}"\n'
            f'        category = "{rule.unit.category}"\n'
            f'        corpus = "{corpus_text}"\n'
            f'        description = "Copy of {unit_name} from corpus {corpus_text}"\n'
            f'        file = "{unit_name}"\n'
            f"        lines = {len(rule.unit.lines)}\n"
            f"    strings:\n{strings}\n"
            f"    condition:\n        {STRINGS_PER_MATCH} of them\n}}\n"
        )
    return "\n".join(parts)


def yara_text(value: bytes) -> str:
    """``value`` as the inside of a YARA text string: printable ASCII as is, the rest as ``\\xHH``."""
    out = []
    for b in value:
        if b == 0x22:
            out.append('\\"')
        elif b == 0x5C:
            out.append("\\\\")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def identifier(name: str) -> str:
    """A YARA identifier made of ``name``'s letters and digits."""
    slug = _IDENTIFIER.sub("_", name).strip("_").lower() or "corpus"
    return slug if not slug[0].isdigit() else f"c_{slug}"


def _write(path: str, text: str) -> None:
    """Write atomically: an agent picking up the pack never sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".build-", suffix=".yar")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# Measuring -------------------------------------------------------------------


def measure_speed(scanner: Scanner, sample: bytes, seconds: float) -> tuple[float, set[str]]:
    """MB/s of ``scanner`` over ``sample`` in 1 MB pieces, repeated for about ``seconds``, and
    the rules that fired on it (on a baseline sample, each one is a likely false positive)."""
    chunks = [sample[i : i + (1 << 20)] for i in range(0, len(sample), 1 << 20)]
    fired: set[str] = set()
    scanned = 0
    start = time.perf_counter()
    while True:
        for chunk in chunks:
            fired.update(m.rule for m in scanner.scan_bytes(chunk).matches)
            scanned += len(chunk)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return scanned / 1e6 / elapsed, fired


def _corpus_text(corpus: Corpus, limit: int = baseline_mod.DEFAULT_SAMPLE_BYTES) -> bytes:
    """Stands in for the baseline sample when there is no baseline."""
    text = bytearray()
    for unit in corpus.units:
        text += b"\n".join(unit.lines) + b"\n"
        if len(text) >= limit:
            break
    return bytes(text[:limit])
