"""``dlp-agent service``: install, remove, start, stop and host the Windows service (Windows only)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EXIT_ERROR = 2
ACTIONS = ("install", "remove", "start", "stop", "run")
SUPPORTED = sys.platform == "win32"
"""The one platform check for the command: elsewhere it exists only to say where the service lives."""

_ELSEWHERE = {
    "linux": "on Linux the agent runs as the systemd unit dlp-agent.service (systemctl status dlp-agent)",
    "darwin": "on macOS it runs as the launchd job com.dlp-endpoint.agent (sudo launchctl print system/com.dlp-endpoint.agent)",
}


def register(commands: Any) -> None:
    p = commands.add_parser(
        "service",
        help="manage the Windows service (Windows only)",
        description="install | remove | start | stop the DlpAgent Windows service; 'run' is what the service control manager starts.",
    )
    p.add_argument("action", nargs="?", choices=ACTIONS, help="what to do with the service")
    p.add_argument("--config", metavar="FILE", help=r"agent configuration (default: %%ProgramData%%\DLP Agent\agent.toml)")
    p.set_defaults(handler=service)


def unsupported_message(platform: str) -> str:
    fallback = "run 'dlp-agent run --config FILE' under the system's service manager"
    where = next((text for prefix, text in _ELSEWHERE.items() if platform.startswith(prefix)), fallback)
    return f"dlp-agent: 'service' manages the Windows service and is not available on {platform}; {where} (see docs/deploy.md)"


def service(args: argparse.Namespace) -> int:
    if not SUPPORTED:
        print(unsupported_message(sys.platform), file=sys.stderr)
        return EXIT_ERROR
    if args.action is None:
        print(f"dlp-agent: service needs an action: {' | '.join(ACTIONS)}", file=sys.stderr)
        return EXIT_ERROR
    from agent import winservice

    config_path = os.path.abspath(args.config) if args.config else winservice.default_config_path()
    return winservice.ACTIONS[args.action](config_path)
