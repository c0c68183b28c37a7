"""``dlp-agent``: argument parsing and dispatch to one module per subcommand."""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["--dlp-agent-proc-reader"]:
    # The frozen binary started again as the process-events reader (agent/sources/proc_events.py):
    # it becomes that small process before importing the rest of the agent. The argument is
    # proc_reader.READER_ARG, spelled out to import nothing first.
    from agent.sources import proc_reader

    sys.exit(proc_reader.main(sys.argv[2:]))

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from agent import __version__  # noqa: E402
from agent.cli import enroll as enroll_command  # noqa: E402
from agent.cli import run as run_command  # noqa: E402
from agent.cli import scan as scan_command  # noqa: E402
from agent.cli import service as service_command  # noqa: E402
from agent.cli import status as status_command  # noqa: E402
from agent.display import TerminalFormatter  # noqa: E402

EXIT_ERROR = 2
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a program its pipe's reader left, as for `yes | head`."""


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
    except BrokenPipeError:
        # The reader went away (`dlp-agent scan --json | head`): what it wanted was written, so
        # no traceback. Output still buffered would fail again when Python flushes it at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
