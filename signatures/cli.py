"""``dlp-signatures``: check packs, make canary tokens, render rule templates."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from agent import __version__
from signatures import canary, template
from signatures.check import PACKS_DIR, check


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dlp-signatures", description="Tools for DLP signature packs.")
    parser.add_argument("--version", action="version", version=f"dlp-signatures {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    p = commands.add_parser("check", help="compile every pack and run every rule's samples")
    p.add_argument("dir", nargs="?", default=PACKS_DIR, help="directory of packs (default: the starter packs)")
    p.add_argument("--samples", metavar="DIR", help="samples directory (default: samples/ beside DIR)")
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

    args = parser.parse_args(argv)
    return int(args.handler(args))


def _check(args: argparse.Namespace) -> int:
    problems = check(args.dir, args.samples)
    for problem in problems:
        print(problem)
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


if __name__ == "__main__":
    sys.exit(main())
