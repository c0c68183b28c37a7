"""``dlp-server``: the collector's command line."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from agent import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dlp-server", description="DLP collector: enrollment, ingest and review.")
    parser.add_argument("--version", action="version", version=f"dlp-server {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("version", help="print the collector version")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    print(f"dlp-server {__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
