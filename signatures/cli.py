"""``dlp-signatures``: check packs, make canary tokens, render rule templates, build packs from a corpus."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from agent import __version__
from agent.scanning import RuleError
from agent.scanning.rules import SetUsage
from signatures import baseline, build, canary, fingerprint, template
from signatures.check import PACKS_DIR, check, compile_report, describe_usage


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dlp-signatures", description="Tools for DLP signature packs.")
    parser.add_argument("--version", action="version", version=f"dlp-signatures {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    p = commands.add_parser("check", help="compile every pack and run every rule's samples")
    p.add_argument("dir", nargs="?", default=PACKS_DIR, help="directory of packs (default: the starter packs)")
    p.add_argument("--samples", metavar="DIR", help="samples directory (default: samples/ beside DIR)")
    p.add_argument(
        "--compile-only", action="store_true", help="only compile: every file that does not compile, the modules and external variables used (for public rule sets)"
    )
    p.set_defaults(handler=_check)

    p = commands.add_parser("canary", help="print new canary tokens to plant in documents")
    p.add_argument("--count", type=int, default=1, metavar="N")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_canary)

    p = commands.add_parser("copyright-rule", help="render the copyright rule for an owner name")
    p.add_argument("--owner", required=True, help='the name in your copyright lines, e.g. "Contoso Ltd"')
    p.add_argument("--severity", default="high", choices=template.SEVERITIES)
    p.add_argument("--out", metavar="FILE", help="write the pack here instead of stdout")
    p.set_defaults(handler=_copyright_rule)

    p = commands.add_parser("build", help="build a pack that detects copies of your code and documents")
    p.add_argument("corpus", nargs="+", metavar="CORPUS", help="folders and files of source code and documents")
    p.add_argument("--name", required=True, help="the corpus's name, kept in every rule's meta")
    p.add_argument("--out", required=True, metavar="FILE", help="the .yar file to write")
    p.add_argument("--baseline", action="append", default=[], metavar="DIR", help="common code to leave out (repeatable)")
    p.add_argument(
        "--no-default-baseline", action="store_true", help="do not compare with this Python's stdlib and site-packages"
    )
    p.add_argument("--max-strings", type=_positive(int), default=build.DEFAULT_MAX_STRINGS, metavar="N", help="%(default)s by default")
    p.add_argument("--severity", default=build.DEFAULT_SEVERITY, choices=template.SEVERITIES)
    p.add_argument("--max-file-mb", type=_positive(float), default=16.0, metavar="MB", help="skip larger corpus files (%(default)s)")
    p.set_defaults(handler=_build)

    p = commands.add_parser("fingerprint", help="build a fingerprint index that finds renamed and reformatted copies of your code")
    p.add_argument("corpus", nargs="+", metavar="CORPUS", help="folders and files of source code")
    p.add_argument("--name", required=True, help="the index's name: what matches are called")
    p.add_argument("--out", required=True, metavar="FILE.fp", help="the index file to write")
    p.add_argument("--baseline", action="append", default=[], metavar="DIR", help="common code to leave out (repeatable)")
    p.add_argument(
        "--no-default-baseline", action="store_true", help="do not compare with the code installed on this machine"
    )
    p.add_argument("--min-tokens", type=_positive(int), metavar="N", help="tokens a match needs in order from one file (60)")
    p.add_argument("--severity", default=fingerprint.DEFAULT_SEVERITY, choices=template.SEVERITIES)
    p.add_argument("--category", default=fingerprint.DEFAULT_CATEGORY, help="%(default)s by default")
    p.add_argument("--max-file-mb", type=_positive(float), default=16.0, metavar="MB", help="skip larger corpus files (%(default)s)")
    p.set_defaults(handler=_fingerprint)

    args = parser.parse_args(argv)
    return int(args.handler(args))


def _check(args: argparse.Namespace) -> int:
    usage: SetUsage | None
    if args.compile_only:
        problems, usage, count = compile_report(args.dir)
        for problem in problems:
            print(problem)
        broken = len({p.path for p in problems})
        print(f"{count - broken} of {count} rule file(s) compile", file=sys.stderr)
    else:
        problems = check(args.dir, args.samples)
        for problem in problems:
            print(problem)
        try:
            from agent.scanning.rules import rule_files, set_usage

            usage = set_usage({ns: p for ns, p in rule_files(args.dir).items() if not p.lower().endswith(".fp")}) if os.path.isdir(args.dir) else None
        except RuleError:
            usage = None
    for line in describe_usage(usage) if usage is not None else ():
        print(line, file=sys.stderr)
    print(f"{len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


def _canary(args: argparse.Namespace) -> int:
    tokens = [canary.new_token() for _ in range(max(1, args.count))]
    if args.json:
        print(json.dumps({"tokens": tokens}))
    else:
        print("\n".join(tokens))
    return 0


def _copyright_rule(args: argparse.Namespace) -> int:
    try:
        text = template.render_copyright_rule(args.owner, severity=args.severity)
    except ValueError as exc:
        print(f"dlp-signatures: {exc}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def _build(args: argparse.Namespace) -> int:
    return _run_builder(
        args,
        "pack",
        lambda roots: build.build_pack(
            args.corpus,
            name=args.name,
            out=args.out,
            baseline_roots=roots,
            max_strings=args.max_strings,
            severity=args.severity,
            max_file_bytes=int(args.max_file_mb * 1024 * 1024),
            progress=_progress,
        ),
        default_baseline=baseline.default_roots,
    )


def _fingerprint(args: argparse.Namespace) -> int:
    if not args.out.endswith(".fp"):
        print("dlp-signatures: the index file's name must end in .fp (rules directories load *.fp)", file=sys.stderr)
        return 2
    return _run_builder(
        args,
        "index",
        lambda roots: fingerprint.build_index(
            args.corpus,
            name=args.name,
            out=args.out,
            baseline_roots=roots,
            min_tokens=args.min_tokens,
            severity=args.severity,
            category=args.category,
            max_file_bytes=int(args.max_file_mb * 1024 * 1024),
            progress=_progress,
        ),
        default_baseline=fingerprint.default_roots,
    )


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run_builder(
    args: argparse.Namespace,
    what: str,
    run: Callable[[list[str]], build.Report | fingerprint.FingerprintReport],
    *,
    default_baseline: Callable[[], list[str]],
) -> int:
    """What ``build`` and ``fingerprint`` share: the baseline folders, the errors and their exit codes, the summary."""
    for path in args.baseline:
        if not os.path.exists(path):
            print(f"dlp-signatures: no such baseline folder: {path}", file=sys.stderr)
            return 2
    roots = [] if args.no_default_baseline else default_baseline()
    try:
        report = run(roots + args.baseline)
    except FileNotFoundError as exc:
        print(f"dlp-signatures: no such file or folder: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"dlp-signatures: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dlp-signatures: cannot write the {what}: {exc}", file=sys.stderr)
        return 1
    except RuleError as exc:
        print(f"dlp-signatures: the {what} built does not compile (please report it): {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
