"""``dlp-agent run`` and ``dlp-agent check-config``: the daemon and its configuration."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

from agent.display import echo

if TYPE_CHECKING:
    from agent.config import AgentConfig

EXIT_ERROR = 2


def register(commands: Any) -> None:
    p = commands.add_parser("run", help="run the agent daemon (until SIGTERM or Ctrl-C)")
    p.add_argument("--config", metavar="FILE", help="agent configuration (TOML)")
    p.set_defaults(handler=run)
    p = commands.add_parser("check-config", help="validate the configuration and print the effective values")
    p.add_argument("--config", metavar="FILE", help="agent configuration (TOML)")
    p.set_defaults(handler=check_config)


def load_or_report(path: str | None) -> AgentConfig | None:
    # Imported here: the configuration reaches the rule loading (yara), which `dlp-agent version` does without.
    from agent.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        echo("dlp-agent: configuration error:", *str(exc).split("\n"), file=sys.stderr)
        return None


def check_config(args: argparse.Namespace) -> int:
    from agent.config import effective

    config = load_or_report(args.config)
    if config is None:
        return EXIT_ERROR
    print(json.dumps(effective(config), indent=2))
    return 0


def log_uncaught_thread_errors() -> None:
    """Send the traceback of a thread the agent does not run itself (watchdog's, say) through the log.

    Python's default prints it straight to stderr, past the formatter that marks control
    characters, and such a traceback may quote a file name.
    """

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "a thread"
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback) if args.exc_value is not None else None
        logging.getLogger("agent").error("%s stopped on an unexpected error", name, exc_info=exc_info)

    threading.excepthook = hook


def run(args: argparse.Namespace) -> int:
    from agent.daemon import (
        Daemon,  # the daemon pulls in watchdog and friends: only for this command
    )
    from agent.scanning import RuleError
    from agent.spool import SpoolError

    config = load_or_report(args.config)
    if config is None:
        return EXIT_ERROR
    log_uncaught_thread_errors()
    try:
        Daemon(config).run()
    except RuleError as exc:
        echo(*f"dlp-agent: rules error: {exc}".split("\n"), file=sys.stderr)
        return EXIT_ERROR
    except SpoolError as exc:
        echo(f"dlp-agent: spool error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0
