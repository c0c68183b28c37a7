"""``dlp-agent``: argument parsing and dispatch to one module per subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agent import __version__
from agent.cli import enroll as enroll_command
from agent.cli import run as run_command
from agent.cli import scan as scan_command
from agent.cli import service as service_command
from agent.cli import status as status_command
from agent.display import TerminalFormatter

EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlp-agent",
        description="Endpoint DLP agent: finds customer code and documents leaving this machine.",
    )
    parser.add_argument("--version", action="version", version=f"dlp-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail to stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    scan_command.register(commands)
    enroll_command.register(commands)
    run_command.register(commands)
    status_command.register(commands)
    service_command.register(commands)
    version = commands.add_parser("version", help="print the agent version")
    version.set_defaults(handler=lambda args: print(f"dlp-agent {__version__}") or 0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Log lines name watched files, whose names anyone who can write there chooses.
    log_handler = logging.StreamHandler()
    log_handler.setFormatter(TerminalFormatter("dlp-agent: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, handlers=[log_handler])
    # Paths on disk need not be UTF-8; print them rather than crash on them.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("dlp-agent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
