"""``dlp-signatures check``: every pack compiles and every rule proves itself on samples.

Samples live beside the packs: ``samples/<pack>/<rule>/positive/*`` must fire
the rule, ``samples/<pack>/<rule>/negative/*`` must not. A rule without both
kinds is an error, so nobody ships a rule nobody has seen fire or stay quiet.
"""

from __future__ import annotations

import dataclasses
import os
import re

from agent.scanning import RuleError, Ruleset, Scanner, load_rules
from agent.scanning.rules import INDEX_SUFFIX, SetUsage, broken_files, compile_rule_files, rule_error_message, rule_files, set_usage
from signatures.lint import duplicate_rule_names, lint_source

PACKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "packs")


@dataclasses.dataclass(frozen=True)
class Problem:
    """A finding printed as ``file:line: message``."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line or 1}: {self.message}"


@dataclasses.dataclass(frozen=True)
class RuleCase:
    """One rule of one pack with its sample files."""

    pack: str
    rule: str
    rule_file: str
    line: int | None
    positives: tuple[str, ...]
    negatives: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.pack}.{self.rule}"


def default_samples_dir(packs_dir: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(packs_dir)), "samples")


def collect(packs_dir: str = PACKS_DIR, samples_dir: str | None = None) -> tuple[list[RuleCase], list[Problem]]:
    """Compile each pack on its own and list its rules with their samples."""
    samples_dir = samples_dir or default_samples_dir(packs_dir)
    cases: list[RuleCase] = []
    problems: list[Problem] = []
    try:
        files = rule_files(packs_dir)
    except RuleError as exc:
        return [], [Problem(exc.path or packs_dir, exc.line, str(exc))]
    if not files:
        problems.append(Problem(packs_dir, None, "no .yar or .yara files"))
    sources: dict[str, str] = {}
    for pack, path in files.items():
        try:
            ruleset = load_rules(path)
        except RuleError as exc:
            problems.append(Problem(exc.path or path, exc.line, exc.args[0].split(": ", 1)[-1]))
            continue
        if path.lower().endswith(INDEX_SUFFIX):
            continue  # a fingerprint index: loading it checked it whole; it has no rules or samples
        with open(path, encoding="utf-8", errors="replace") as f:
            source = f.read()
        sources[pack] = source
        problems.extend(Problem(path, finding.line, finding.message) for finding in lint_source(source, ruleset.rules, ruleset.warnings))
        for rule in ruleset.rules:
            if rule.meta.get("corpus"):
                continue  # built from a corpus by `dlp-signatures build`, which measures it on the corpus itself
            base = os.path.join(samples_dir, pack, rule.identifier)
            cases.append(
                RuleCase(
                    pack=pack,
                    rule=rule.identifier,
                    rule_file=path,
                    line=_rule_line(source, rule.identifier),
                    positives=_files(os.path.join(base, "positive")),
                    negatives=_files(os.path.join(base, "negative")),
                )
            )
    for name, packs in duplicate_rule_names(sources).items():
        first = files[packs[0]]
        problems.append(Problem(first, _rule_line(sources[packs[0]], name), f"rule {name} is also defined in {', '.join(files[p] for p in packs[1:])}"))
    return cases, problems


def verify(case: RuleCase, scanner: Scanner | None = None) -> list[Problem]:
    """Problems of one rule: missing samples, a positive it misses, a negative it fires on."""
    problems = []
    where = (case.rule_file, case.line)
    if not case.positives:
        problems.append(Problem(*where, f"rule {case.rule} has no positive samples"))
    if not case.negatives:
        problems.append(Problem(*where, f"rule {case.rule} has no negative samples"))
    scanner = scanner or Scanner(load_rules(case.rule_file))
    for sample in case.positives:
        if not _fires(scanner, sample, case.rule):
            problems.append(Problem(*where, f"rule {case.rule} does not fire on positive sample {sample}"))
    for sample in case.negatives:
        if _fires(scanner, sample, case.rule):
            problems.append(Problem(*where, f"rule {case.rule} fires on negative sample {sample}"))
    return problems


def check(packs_dir: str = PACKS_DIR, samples_dir: str | None = None) -> list[Problem]:
    """Everything ``dlp-signatures check`` reports."""
    cases, problems = collect(packs_dir, samples_dir)
    scanners: dict[str, Scanner] = {}
    for case in cases:
        scanner = scanners.get(case.rule_file)
        if scanner is None:
            scanner = scanners[case.rule_file] = Scanner(load_rules(case.rule_file))
        problems.extend(verify(case, scanner))
    return problems


def compile_report(packs_dir: str) -> tuple[list[Problem], SetUsage, int]:
    """``check --compile-only``: every rule file that does not compile (with the agent's external
    variables), each with its first error, then any clash between files that compile alone; the
    modules and external variables the set uses; how many rule files there are."""
    try:
        files = rule_files(packs_dir) if os.path.isdir(packs_dir) else {os.path.splitext(os.path.basename(packs_dir))[0]: packs_dir}
    except RuleError as exc:
        return [Problem(exc.path or packs_dir, exc.line, rule_error_message(exc))], SetUsage({}, {}, ()), 0
    rules = {ns: path for ns, path in files.items() if not path.lower().endswith(INDEX_SUFFIX)}
    if not files:
        return [Problem(packs_dir, None, "no .yar, .yara or .fp files")], SetUsage({}, {}, ()), 0
    broken = broken_files(rules)
    problems = [Problem(e.path or packs_dir, e.line, rule_error_message(e)) for e in broken]
    left = {ns: path for ns, path in files.items() if path not in {e.path for e in broken}}
    if left:
        try:
            ruleset = compile_rule_files(left, source=packs_dir, skip_broken=True)
        except RuleError as exc:  # a fingerprint index that does not load
            problems.append(Problem(exc.path or packs_dir, exc.line, rule_error_message(exc)))
        else:
            problems.extend(Problem(e.path or packs_dir, e.line, f"compiles alone but not with the others: {rule_error_message(e)}") for e in ruleset.skipped)
    return problems, set_usage(rules), len(rules)


def describe_usage(usage: SetUsage) -> list[str]:
    """The lines saying which modules and external variables a set uses."""
    modules = ", ".join(f"{name} ({len(paths)} file{'s' if len(paths) != 1 else ''})" for name, paths in usage.modules.items())
    variables = ", ".join(f"{name} ({len(paths)} file{'s' if len(paths) != 1 else ''})" for name, paths in usage.externals.items())
    lines = [f"modules used: {modules or 'none'}", f"external variables used: {variables or 'none'}"]
    if usage.missing_modules:
        lines.append(f"modules this engine lacks: {', '.join(usage.missing_modules)}")
    return lines


def _fires(scanner: Scanner, sample: str, rule: str) -> bool:
    return any(m.rule == rule for m in scanner.scan_path(sample).matches)


def _files(directory: str) -> tuple[str, ...]:
    if not os.path.isdir(directory):
        return ()
    return tuple(sorted(os.path.join(directory, n) for n in os.listdir(directory) if not n.startswith(".~")))


def _rule_line(source: str, identifier: str) -> int | None:
    found = re.search(rf"^[ \t]*(?:(?:private|global)\s+)*rule\s+{re.escape(identifier)}\b", source, re.M)
    return source.count("\n", 0, found.start()) + 1 if found else None


__all__ = ["PACKS_DIR", "Problem", "RuleCase", "Ruleset", "check", "collect", "compile_report", "describe_usage", "verify"]
