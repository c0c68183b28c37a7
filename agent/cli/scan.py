"""``dlp-agent scan``: a grep for leaks over files and trees."""

from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any, TextIO

from agent.display import echo, visible
from agent.events import worst_severity
from agent.scanning import (
    ProtectedIndex,
    RuleError,
    ScanError,
    ScanLimits,
    Scanner,
    ScanResult,
    Status,
    load_rules,
)
from agent.scanning.batch import scan_targets
from agent.scanning.cache import ResultCache
from agent.scanning.rulecache import default_dir as rules_cache_dir
from agent.scanning.rules import starter_packs_dir
from agent.scanning.walk import iter_targets

EXIT_CLEAN = 0
EXIT_MATCH = 1
EXIT_ERROR = 2


def register(commands: Any) -> None:
    p = commands.add_parser(
        "scan",
        help="scan files and folders for protected content",
        description="Scan files and folders recursively. Exit 0 when nothing matched, 1 when something did, 2 on errors.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--rules", metavar="DIR", help="rule directory, rule file or compiled rules (default: the starter packs)")
    p.add_argument("--json", action="store_true", help="one JSON object per scanned file, one per line")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N", help="files scanned in parallel (default 1)")
    p.add_argument("--protected", action="append", default=[], metavar="DIR", help="report byte-identical copies of files under DIR (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip paths matching GLOB (repeatable)")
    p.add_argument("--timeout", type=float, default=ScanLimits.timeout_s, metavar="SECONDS", help="time budget per file")
    p.add_argument("--max-file-size", type=_positive_int, default=ScanLimits.max_file_bytes, metavar="BYTES", help="larger files are reported too_large")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    p.add_argument("--config", metavar="FILE", help="take the rules directory from this agent configuration")
    p.add_argument("--skip-broken", action="store_true", help="leave out rule files that do not compile (named on stderr) instead of failing")
    p.set_defaults(handler=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def run(args: argparse.Namespace) -> int:
    rules_location = args.rules
    if rules_location is None and args.config:
        from agent.cli.run import load_or_report

        config = load_or_report(args.config)
        if config is None:
            return EXIT_ERROR
        rules_location = config.rules_location()
    rules_location = rules_location or starter_packs_dir()
    if rules_location is None:
        print("dlp-agent: no rules: pass --rules DIR", file=sys.stderr)
        return EXIT_ERROR
    try:
        ruleset = load_rules(rules_location, skip_broken=args.skip_broken, cache_dir=rules_cache_dir())
        if ruleset.skipped:
            _report_skipped(ruleset)
        limits = ScanLimits(timeout_s=args.timeout, max_file_bytes=args.max_file_size)
    except RuleError as exc:
        echo(*f"dlp-agent: rules error: {exc}".split("\n"), file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:
        echo(*f"dlp-agent: {exc}".split("\n"), file=sys.stderr)
        return EXIT_ERROR
    protected = ProtectedIndex.build(args.protected, exclude=args.exclude) if args.protected else None
    scanner = Scanner(ruleset, limits=limits, cache=ResultCache(), protected=protected)
    # What start-up made (modules, the rules' metadata) lives as long as the scan: frozen, the
    # collections that the scan's own garbage triggers no longer walk it (about 1 % of a scan of
    # small files), and forked workers (pool.py) keep sharing its pages.
    gc.freeze()
    targets = iter_targets(args.paths, exclude=args.exclude)
    scanned = scan_targets(scanner, targets, jobs=args.jobs)
    results = scanned
    show_progress = not args.no_progress and sys.stderr.isatty()
    summary = _Summary()
    if show_progress:
        results = _with_progress(results, args.paths, args.exclude)
    try:
        for result in results:
            summary.add(result)
            # sys.stdout is looked up each time: the progress bar redirects it while shown.
            if args.json:
                sys.stdout.write(json.dumps(result.to_dict()) + "\n")
            else:
                _print_text(result, sys.stdout)
    except ScanError as exc:
        sys.stdout.flush()
        echo(*f"dlp-agent: {exc}".split("\n"), file=sys.stderr)
        return EXIT_ERROR
    finally:
        results.close()
        scanned.close()  # with --jobs N: stops and reaps the workers on Ctrl-C or a closed pipe too
    if not args.json:
        print(summary.render(ruleset.version, ruleset.rule_count))
    elif show_progress:
        print(summary.render(ruleset.version, ruleset.rule_count), file=sys.stderr)
    sys.stdout.flush()
    return EXIT_MATCH if summary.counts.get(Status.MATCH, 0) else EXIT_CLEAN


def _report_skipped(ruleset: Any) -> None:
    """``--skip-broken``: name every rule file left out; none left at all is an error."""
    for problem in ruleset.skipped:
        echo(f"dlp-agent: rules: left out: {problem}", file=sys.stderr)
    echo(f"dlp-agent: rules: {len(ruleset.skipped)} rule file(s) left out, {len(ruleset.namespaces)} loaded", file=sys.stderr)
    if not ruleset.namespaces and not ruleset.fingerprints:
        raise RuleError("no rule file compiles", path=ruleset.source)


def _print_text(result: ScanResult, out: TextIO) -> None:
    """One line per finding; a file's or a member's name cannot drive the terminal or add a line."""
    if result.status is Status.MATCH:
        worst = worst_severity(m.severity for m in result.matches)
        found = "; ".join(_describe(m) for m in result.matches)
        out.write(visible(f"{result.path}: {worst}: {found}") + "\n")
        if result.reason:
            out.write(visible(f"{result.path}: note: {result.reason}") + "\n")
    elif result.status is not Status.CLEAN:
        echo(f"dlp-agent: {result.path}: {result.status.value}: {result.reason}", file=sys.stderr)


def _describe(match: Any) -> str:
    name = f"{match.namespace}.{match.rule}"
    if match.protected_path:
        name = f"copy of {match.protected_path}"
    if match.kind == "fingerprint":
        pairs = ", ".join(f"{a}-{b} ~ {c}-{d}" for (a, b), (c, d) in list(zip(match.lines, match.source_lines))[:3])
        more = " ..." if len(match.lines) > 3 else ""
        name = f"fingerprint {match.rule}: copies {match.source} (lines {pairs}{more}; {match.coverage:.0%} of the text)"
    return f"{name} in {match.member}" if match.member else name


class _Summary:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.files = 0
        self.bytes = 0
        self.counts: dict[Status, int] = {}

    def add(self, result: ScanResult) -> None:
        self.files += 1
        self.bytes += result.size or 0
        self.counts[result.status] = self.counts.get(result.status, 0) + 1

    def render(self, ruleset_version: str, rule_count: int) -> str:
        elapsed = time.monotonic() - self.started
        parts = [f"{self.counts.get(s, 0)} {s.value}" for s in Status if self.counts.get(s, 0)]
        mb = self.bytes / 1e6
        return (
            f"scanned {self.files} files ({mb:.1f} MB) in {elapsed:.1f}s: {', '.join(parts) or 'nothing'}"
            f" [ruleset {ruleset_version}, {rule_count} rules]"
        )


def _with_progress(results: Iterator[ScanResult], roots: list[str], exclude: list[str]) -> Generator[ScanResult, None, None]:
    """A progress bar on stderr; the total is counted by a second walk in the background."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[mb]:.0f} MB"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = progress.add_task("scan", total=None, mb=0.0)

    def count() -> None:
        total = sum(1 for _ in iter_targets(roots, exclude=exclude))
        progress.update(task, total=total)

    threading.Thread(target=count, name="scan-count", daemon=True).start()
    scanned_bytes = 0
    with progress:
        for result in results:
            scanned_bytes += result.size or 0
            progress.update(task, advance=1, mb=scanned_bytes / 1e6)
            yield result
