"""``dlp-agent status``: what the agent is doing, read from its spool (works while it runs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from agent.cli.run import EXIT_ERROR, load_or_report
from agent.display import echo


def register(commands: Any) -> None:
    p = commands.add_parser("status", help="spool depth, drops, sources' health, ruleset, last shipment")
    p.add_argument("--config", metavar="FILE", help="agent configuration (TOML)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=status)


def collect(spool_path: str) -> dict[str, Any]:
    """The status document (``--json``); raises SpoolError when there is no spool yet."""
    from agent.spool import Spool

    reader = Spool.open_readonly(spool_path)
    try:
        stats = reader.stats()
        state = reader.all_state()
    finally:
        reader.close()
    daemon = state.get("daemon") or {}
    pid = daemon.get("pid")
    return {
        "spool_depth": stats["depth"],
        "dropped": stats["dropped_total"],
        "ruleset_version": state.get("ruleset_version"),
        "fingerprints": state.get("fingerprints") or [],
        "last_shipped_at": state.get("last_shipped_at"),
        "spool_bytes": stats["bytes"],
        "matched_events": stats.get("matched"),
        "running": bool(daemon.get("running")) and isinstance(pid, int) and _alive(pid),
        "pid": pid,
        "started_at": _iso(daemon.get("started_at")),
        "spool_disk_free": _disk_free(spool_path),
        "sources": state.get("sources") or {},
    }


def status(args: argparse.Namespace) -> int:
    from agent.spool import SpoolError

    config = load_or_report(args.config)
    if config is None:
        return EXIT_ERROR
    try:
        doc = collect(config.spool.path)
    except SpoolError as exc:
        echo(f"dlp-agent: no status: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(doc))
        return 0
    # The ruleset version comes from the collector, sources' messages name files: echo marks controls.
    running = f"running (pid {doc['pid']})" if doc["running"] else "not running"
    echo(f"agent:     {running}")
    echo(f"spool:     {doc['spool_depth']} event(s), {doc['spool_bytes']} bytes, {doc['dropped']} dropped")
    if doc["spool_disk_free"] is not None:
        echo(f"disk:      {doc['spool_disk_free']} bytes free under the spool")
    echo(f"ruleset:   {doc['ruleset_version'] or '-'}")
    for index in doc["fingerprints"]:
        echo(f"index:     {index.get('name')} {index.get('version')}: {index.get('fingerprints')} fingerprints of {index.get('files')} files")
    echo(f"shipped:   {doc['last_shipped_at'] or 'never'}")
    for name, health in sorted(doc["sources"].items()):
        echo(f"{name + ':':<10} {health.get('state', '?')}: {health.get('message', '')}")
        if health.get("deaths"):
            echo(f"{'':<10} died {health['deaths']} time(s), last at {health.get('last_died_at') or '?'}: {health.get('last_error', '')}")
    return 0


def _disk_free(path: str) -> int | None:
    """Free bytes where the spool lives: when that disk is full the daemon cannot record it."""
    try:
        import shutil

        return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        return None


def _alive(pid: int) -> bool:
    # Not os.kill(pid, 0): on Windows signal 0 is CTRL_C_EVENT, which would interrupt the agent.
    import psutil

    return psutil.pid_exists(pid)


def _iso(timestamp: Any) -> str | None:
    if not isinstance(timestamp, (int, float)):
        return None
    import datetime as dt  # here, as shutil above: `dlp-agent scan` builds the same parser

    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")
