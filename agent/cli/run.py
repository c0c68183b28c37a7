"""``dlp-agent run`` and ``dlp-agent check-config``: the daemon and its configuration."""

from __future__ import annotations

import argparse
import json
import sys
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
    # Imported here: pydantic costs start-up time and ~10 MB that `dlp-agent scan` does not need.
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


def run(args: argparse.Namespace) -> int:
    from agent.daemon import (
        Daemon,  # the daemon pulls in watchdog and friends: only for this command
    )
    from agent.scanning import RuleError
    from agent.spool import SpoolError

    config = load_or_report(args.config)
    if config is None:
        return EXIT_ERROR
    try:
        Daemon(config).run()
    except RuleError as exc:
        echo(*f"dlp-agent: rules error: {exc}".split("\n"), file=sys.stderr)
        return EXIT_ERROR
    except SpoolError as exc:
        echo(f"dlp-agent: spool error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0
