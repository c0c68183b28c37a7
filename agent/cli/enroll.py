"""``dlp-agent enroll``: trade an enrollment token for this agent's identity at the collector."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from agent.display import echo

EXIT_ERROR = 2


def register(commands: Any) -> None:
    p = commands.add_parser("enroll", help="enroll this agent with a collector (stores credentials, mode 0600)")
    p.add_argument("--config", metavar="FILE", help="agent configuration (TOML); credentials go to [server] credentials")
    p.add_argument("--server", required=True, metavar="URL", help="the collector, e.g. https://collector.example:8443")
    p.add_argument("--token", metavar="TOKEN", help="enrollment token from dlp-server token create (or DLP_TOKEN)")
    p.add_argument("--ca", metavar="FILE", help="PEM CA file to verify the collector (default: the Mozilla CA bundle built into the agent, certifi, or REQUESTS_CA_BUNDLE when set)")
    p.set_defaults(handler=enroll)


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="ascii") as handle:
                return handle.read().strip()[:128]
        except OSError:
            continue
    return ""


def enroll(args: argparse.Namespace) -> int:
    # Imported here, as every command's own needs are: `dlp-agent scan` builds the same parser
    # and should not pay for the host facts (platform alone compiles nine regular expressions).
    import platform
    import socket
    from datetime import UTC, datetime

    from agent import __version__
    from agent.cli.run import load_or_report
    from agent.credentials import Credentials, save
    from agent.transport import CollectorClient, TransportError

    config = load_or_report(args.config)
    if config is None:
        return EXIT_ERROR
    token = args.token or os.environ.get("DLP_TOKEN", "")
    if not token:
        print("dlp-agent: enroll needs --token TOKEN (or DLP_TOKEN in the environment)", file=sys.stderr)
        return EXIT_ERROR
    ca_file = os.path.abspath(args.ca) if args.ca else config.server.ca_file
    if ca_file and not os.path.isfile(ca_file):
        echo(f"dlp-agent: CA file {ca_file} does not exist", file=sys.stderr)
        return EXIT_ERROR
    hostname = config.agent.host or socket.gethostname()
    facts = {"hostname": hostname, "os": f"{platform.system()} {platform.release()}"[:64], "machine_id": _machine_id(), "agent_version": __version__}
    try:
        client = CollectorClient(args.server, ca_file=ca_file, client_cert=config.server.client_cert, client_key=config.server.client_key, timeout_s=config.server.timeout_s)
        try:
            answer = client.enroll(token, facts)
        finally:
            client.close()
    except TransportError as exc:
        echo(f"dlp-agent: {exc}", file=sys.stderr)
        return EXIT_ERROR
    credentials = Credentials(
        server_url=args.server.rstrip("/"),
        agent_id=answer["agent_id"],
        credential=answer["credential"],
        vendor=answer["vendor"],
        signing_public_key=answer.get("signing_public_key", ""),
        heartbeat_interval_s=int(answer.get("heartbeat_interval_s", 60)),
        enrolled_at=datetime.now(UTC).isoformat(timespec="seconds"),
        ca_file=ca_file,
    )
    save(config.server.credentials, credentials)
    # The agent ID and vendor are the collector's answer: marked like any text from elsewhere.
    echo(f"enrolled {hostname} as agent {credentials.agent_id} of vendor {credentials.vendor}; credentials in {config.server.credentials}")
    return 0
