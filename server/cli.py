"""``dlp-server``: the collector's command line (init, serve, users, tokens, agents, devices, egress, quarantine, marks, trace, export)."""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from agent import __version__
from agent.display import TerminalFormatter, echo
from agent.events import SEVERITIES

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
ROLE_CHOICES = ("admin", "reviewer", "vendor_lead")
"""server/store/users.py ROLES, named here so the parser is built without importing the store."""


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _print(args: argparse.Namespace, payload: dict[str, Any], text: str | list[str]) -> None:
    """``payload`` as JSON with ``--json``, else ``text``; neither passes a control character on raw.

    Host names, versions, pack and file names come from agents or from disk, and an ESC,
    CSI, CR or BEL in one would drive the admin's terminal or forge a line: ``echo`` shows
    them as ``<U+001B>``, ``json.dumps`` as ``\\u001b`` (ensure_ascii).
    """
    if getattr(args, "json", False):
        print(json.dumps(payload))
    else:  # a list: lines with agent values in them, whose own newlines must not start a line
        echo(*(text if isinstance(text, list) else text.split("\n")))


def cmd_init(args: argparse.Namespace) -> int:
    from server.bootstrap import initialize

    result = initialize(args.data_dir)
    payload = {"admin_user": result.admin_user, "admin_password": result.admin_password, "api_token": result.api_token}
    if result.created:
        text = (
            f"Collector initialised.\n  admin user:     {result.admin_user}\n  admin password: {result.admin_password}\n"
            f"  API token:      {result.api_token}\nThe password and token are shown only this once."
        )
    else:
        text = "Collector already initialised; schema is current. No new admin was created."
    _print(args, payload, text)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from server.api.app import create_app
    from server.bootstrap import open_collector
    from server.maintenance import Maintenance
    from server.metrics_access import ensure_token, expected_digest
    from server.serving import run_server, run_workers

    settings = _settings(args)
    collector = open_collector(settings, migrate=True)
    token_file = ensure_token(settings, host=args.host)
    if token_file is not None:
        collector.metrics_token_digest = expected_digest(settings)
        print(f"dlp-server: GET /metrics needs Authorization: Bearer <the token in {token_file}>", file=sys.stderr)
    if args.workers > 1:
        if collector.db.is_sqlite:
            collector.close()
            raise ValueError("--workers needs PostgreSQL (DLP_DATABASE_URL): SQLite takes one writer process")
        collector.close()
        run_workers(str(settings.data_dir), workers=args.workers, host=args.host, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key, log_level=args.log_level, access_log=args.access_log)
        return EXIT_OK
    # Everything imported so far lives as long as the process: keep the collector's full
    # garbage collections (80-185 ms pauses under load) from walking it again and again.
    gc.collect()
    gc.freeze()
    maintenance = Maintenance(collector)
    maintenance.start()
    try:
        run_server(create_app(collector), host=args.host, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key, log_level=args.log_level, access_log=args.access_log)
    finally:
        maintenance.stop()
        collector.close()
    return EXIT_OK


def cmd_user_add(args: argparse.Namespace) -> int:
    from server.store import audit, vendors
    from server.store import users as user_store

    with _collector(args) as collector:
        now = collector.clock()
        with collector.db.write() as conn:
            # An unknown name is refused (NotFound, exit 1), never created in passing as a typo would be.
            vendor_ids = tuple(vendors.id_of(conn, name) for name in args.vendor) if args.vendor else None
            user, password, token = user_store.create(conn, name=args.name, role=args.role, now=now, vendor_ids=vendor_ids)
            details: dict[str, object] = {"role": user.role}
            if args.vendor:
                details["vendors"] = sorted(args.vendor)
            audit.append(conn, actor=_actor(), action="user.create", target=user.name, details=details, now=now)
    scope = f", vendors {', '.join(sorted(args.vendor))}" if args.vendor else ""
    _print(
        args,
        {"user": user.name, "password": password, "api_token": token},
        f"user {user.name} ({user.role}{scope})\n  password:  {password}\n  API token: {token}",
    )
    return EXIT_OK


def cmd_token_create(args: argparse.Namespace) -> int:
    from server.durations import parse_duration
    from server.store import audit, enrollment

    lifetime = parse_duration(args.expires_in)
    with _collector(args) as collector:
        now = collector.clock()
        with collector.db.write() as conn:
            token, record = enrollment.create_token(conn, vendor=args.vendor, uses=args.uses, lifetime=lifetime, created_by=_actor(), now=now)
            audit.append(conn, actor=_actor(), action="token.create", target=args.vendor, details=record, now=now)
    _print(args, {"token": token, **record}, token)
    return EXIT_OK


def cmd_agent_list(args: argparse.Namespace) -> int:
    from server.store import agents
    from server.store.scope import Scope

    with _collector(args) as collector, collector.db.read() as conn:
        items = agents.list_agents(conn, vendor=args.vendor, status=args.status, scope=Scope.everything())
    if args.json:
        print(json.dumps({"items": items}))
        return EXIT_OK
    print(f"{'ID':32}  {'VENDOR':16}  {'HOSTNAME':24}  {'STATUS':8}  {'LAST SEEN':24}  {'RULESET':16}  SPOOL")
    for a in items:
        echo(f"{a['id']:32}  {a['vendor'][:16]:16}  {a['hostname'][:24]:24}  {a['status']:8}  {a['last_seen_at']:24}  {(a['ruleset_version'] or '-')[:16]:16}  {a['spool_depth']}")
    return EXIT_OK


def cmd_agent_revoke(args: argparse.Namespace) -> int:
    from server.store import agents, audit

    with _collector(args) as collector:
        now = collector.clock()
        with collector.db.write() as conn:
            agents.revoke(conn, agent_id=args.agent_id, now=now)
            audit.append(conn, actor=_actor(), action="agent.revoke", target=args.agent_id, now=now)
    _print(args, {"revoked": args.agent_id}, f"agent {args.agent_id} revoked")
    return EXIT_OK


def cmd_vendor_ranges(args: argparse.Namespace) -> int:
    from server.netaddr import parse_networks
    from server.store import audit, vendors

    cidrs = [str(n) for n in parse_networks(args.cidrs)]
    with _collector(args) as collector:
        now = collector.clock()
        with collector.db.write() as conn:
            vendors.get_or_create(conn, name=args.name, now=now)
            vendor = vendors.set_ranges(conn, name=args.name, allowed_cidrs=cidrs)
            audit.append(conn, actor=_actor(), action="vendor.ranges", target=args.name, details={"allowed_cidrs": cidrs}, now=now)
    _print(args, vendor, f"vendor {args.name}: {', '.join(cidrs) or 'any address'}")
    return EXIT_OK


def cmd_export_events(args: argparse.Namespace) -> int:
    from server.siem.export import write_events
    from server.store import audit, review
    from server.store.scope import Scope

    filters = review.EventFilter(since=args.since, until=args.until, vendor=args.vendor, min_severity=args.min_severity)
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    try:
        with _collector(args) as collector:
            with collector.db.read() as conn:
                count = write_events(
                    review.iter_for_export(conn, scope=Scope.everything(), filters=filters), out, fmt=args.format, product_version=__version__, terminal=not args.output
                )
            with collector.db.write() as conn:
                details = {"format": args.format, "count": count, "since": args.since.isoformat() if args.since else None}
                audit.append(conn, actor=_actor(), action="events.export", target=args.output or "stdout", details=details, now=collector.clock())
    finally:
        if args.output:
            out.close()
    print(f"exported {count} events", file=sys.stderr)
    return EXIT_OK


def cmd_signatures_publish(args: argparse.Namespace) -> int:
    from agent.bundle import INDEX_SUFFIX
    from agent.scanning.rules import rule_files
    from server.api.signature_routes import publish_packs, staged_index_files

    path = os.path.abspath(args.path)
    if os.path.isdir(path):
        files = rule_files(path)
    elif os.path.isfile(path):
        files = {os.path.splitext(os.path.basename(path))[0]: path}
    else:
        raise ValueError(f"{args.path}: no such file or directory")
    index_files = {name: file for name, file in files.items() if file.lower().endswith(INDEX_SUFFIX)}
    if not files:
        raise ValueError(f"{args.path}: no .yar, .yara or {INDEX_SUFFIX} files")
    packs = {}
    for name, file in files.items():
        if name not in index_files:
            with open(file, encoding="utf-8") as handle:
                packs[name] = handle.read()
    with _collector(args) as collector, staged_index_files(collector, sorted(index_files.items())) as indexes:
        result = publish_packs(
            collector, packs=packs, indexes=indexes, vendors=args.vendor or None, remove=args.remove or [], note=args.note, actor=_actor(), address=None
        )
    scope = ", ".join(args.vendor) if args.vendor else "every vendor"
    described = [*sorted(packs), *(f"{name}{INDEX_SUFFIX} ({indexes[name].info.get('fingerprints', '?')} fingerprints)" for name in sorted(indexes))]
    _print(args, result, f"published version {result['version']} ({result['rules']} rules); {', '.join(described)} for {scope}")
    return EXIT_OK


def cmd_signatures_rollback(args: argparse.Namespace) -> int:
    from server.api.signature_routes import rollback_to

    with _collector(args) as collector:
        result = rollback_to(collector, version=args.version, actor=_actor(), address=None)
    _print(args, result, f"published version {result['version']} with the packs of version {args.version}")
    return EXIT_OK


def cmd_signatures_list(args: argparse.Namespace) -> int:
    from server.store import signatures

    with _collector(args) as collector, collector.db.read() as conn:
        items = signatures.versions(conn)
    if args.json:
        print(json.dumps({"items": items}))
        return EXIT_OK
    for v in items:
        packs = ", ".join(p["name"] + (f" [{', '.join(p['vendors'])}]" if p["vendors"] else "") for p in v["packs"])
        echo(f"{'*' if v['current'] else ' '} v{v['version']:<5} {v['created_at']}  {v['created_by'][:20]:20}  agents {v['agents']:<6} {packs}  {v['note']}")
        for i in v["indexes"]:
            scope = f" [{', '.join(i['vendors'])}]" if i["vendors"] else ""
            echo(f"         index {i['name']}.fp{scope}: {i['fingerprints']} fingerprints, {i['size']} bytes, version {i['index_version']}")
    return EXIT_OK


def _device(entry: dict[str, Any]) -> str:
    return f"{entry['vendor_id']}:{entry['product_id']}:{entry['serial']}"


def cmd_devices_show(args: argparse.Namespace) -> int:
    from server.store import devices
    from server.store.scope import Scope

    with _collector(args) as collector, collector.db.read() as conn:
        policy = devices.get_policy(conn, vendor=args.vendor, now=collector.clock(), scope=Scope.everything())
    if policy is None:
        raise ValueError(f"vendor {args.vendor!r} has no device policy: its agents only audit (dlp-server devices set)")
    lines = [f"vendor {policy['vendor']}: {policy['action']} (version {policy['version']}, {policy['updated_at']} by {policy['updated_by']})"]
    lines += [f"  allow  {_device(a)}" + (f"  # {a['note']}" if a["note"] else "") for a in policy["allowed"]] or ["  allow  (nothing)"]
    lines += [f"  except {e['id']}: {_device(e)} until {e['expires_at']} by {e['granted_by']}: {e['reason']}" for e in policy["exceptions"]]
    _print(args, policy, lines)
    return EXIT_OK


def cmd_devices_set(args: argparse.Namespace) -> int:
    from server.store import devices

    allowed = [devices.parse_device(text) for text in args.allow or []]
    with _collector(args) as collector, collector.db.write() as conn:
        policy = devices.set_policy(conn, vendor=args.vendor, action=args.action, allowed=allowed, actor=_actor(), address=None, now=collector.clock())
    _print(args, policy, f"vendor {args.vendor}: {policy['action']} with {len(policy['allowed'])} allowed device pattern(s), version {policy['version']}")
    return EXIT_OK


def cmd_devices_except(args: argparse.Namespace) -> int:
    from server.store import devices

    device = devices.parse_device(args.device)
    with _collector(args) as collector, collector.db.write() as conn:
        granted = devices.grant_exception(
            conn, vendor=args.vendor, device=device, duration=args.duration, reason=args.reason, actor=_actor(), address=None, now=collector.clock()
        )
    _print(args, granted, f"exception {granted['id']}: {_device(granted)} allowed until {granted['expires_at']}")
    return EXIT_OK


def cmd_devices_revoke(args: argparse.Namespace) -> int:
    from server.store import devices

    with _collector(args) as collector, collector.db.write() as conn:
        revoked = devices.revoke_exception(conn, vendor=args.vendor, exception_id=args.exception_id, actor=_actor(), address=None, now=collector.clock())
    _print(args, revoked, f"exception {args.exception_id} revoked (policy version {revoked['version']})")
    return EXIT_OK


def _egress_text(policy: dict[str, Any]) -> list[str]:
    reported = "reported at low severity" if policy["report_allowed"] else "not reported"
    since = f", {policy['updated_at']} by {policy['updated_by']}" if policy["version"] else ""
    lines = [f"vendor {policy['vendor']}: egress to allowed remotes {reported} (version {policy['version']}{since})"]
    return lines + ([f"  allow  {p}" for p in policy["allowed_remotes"]] or ["  allow  (nothing)"])


def cmd_egress_show(args: argparse.Namespace) -> int:
    from server.store import egress
    from server.store.scope import Scope

    with _collector(args) as collector, collector.db.read() as conn:
        policy = egress.get_policy(conn, vendor=args.vendor, scope=Scope.everything())
    _print(args, policy, _egress_text(policy))
    return EXIT_OK


def cmd_egress_change(args: argparse.Namespace) -> int:
    """``allow``, ``disallow`` and ``report-allowed``: one audited change of the vendor's egress policy."""
    from server.store import egress

    change: dict[str, Any] = {"add": args.patterns} if args.change == "allow" else {"remove": args.patterns} if args.change == "disallow" else {}
    if args.change == "report-allowed":
        change["report_allowed"] = args.switch == "on"
    with _collector(args) as collector, collector.db.write() as conn:
        policy = egress.change_policy(conn, vendor=args.vendor, **change, actor=_actor(), address=None, now=collector.clock())
    _print(args, policy, _egress_text(policy))
    return EXIT_OK


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    from server.store import quarantine
    from server.store.scope import Scope

    if args.state and args.state not in quarantine.STATES:
        raise ValueError(f"--state must be one of {', '.join(quarantine.STATES)}")
    with _collector(args) as collector, collector.db.read() as conn:
        items = quarantine.list_items(conn, vendor=args.vendor, agent_id=args.agent, state=args.state, scope=Scope.everything())
    lines = [f"{'QUARANTINE ID':36}  {'STATE':17}  {'HOST':20}  {'SIZE':>12}  ORIGINAL PATH"]
    lines += [f"{i['quarantine_id']:36}  {i['state']:17}  {i['hostname'][:20]:20}  {i['size']:>12}  {i['original_path']}" for i in items]
    _print(args, {"items": items}, lines)
    return EXIT_OK


def cmd_quarantine_request(args: argparse.Namespace) -> int:
    from server.store import quarantine

    with _collector(args) as collector, collector.db.write() as conn:
        queued = quarantine.request(conn, quarantine_id=args.quarantine_id, op=args.op, actor=_actor(), address=None, now=collector.clock())
    _print(args, queued, f"{args.op} of {queued['quarantine_id']} queued as command {queued['command']} for agent {queued['agent_id']}")
    return EXIT_OK


class _collector:
    """``with _collector(args) as c``: open the data directory's collector and close it after."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args

    def __enter__(self) -> Any:
        from server.bootstrap import open_collector

        self._c = open_collector(_settings(self._args))
        return self._c

    def __exit__(self, *exc: object) -> None:
        self._c.close()


def _settings(args: argparse.Namespace) -> Any:
    from server.settings import load_settings

    return load_settings(args.data_dir)


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. 2026-11-24T00:00:00Z")
    return value


def _bound(handler: Callable[[argparse.Namespace, Any, str], int]) -> Callable[[argparse.Namespace], int]:
    """A marks command's handler (server/mark_commands.py) given this module's collector opener and actor."""
    return lambda args: handler(args, _collector, _actor())


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", metavar="DIR", help="collector data directory (default: the platform's data directory)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print one JSON object")

    parser = argparse.ArgumentParser(prog="dlp-server", description="DLP collector: enrollment, ingest and review.")
    parser.add_argument("--version", action="version", version=f"dlp-server {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(sub: Any, name: str, handler: Callable[[argparse.Namespace], int], help_text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common, *parents])
        p.set_defaults(handler=handler)
        return p

    commands.add_parser("version", help="print the collector version", parents=[common]).set_defaults(handler=lambda _a: print(f"dlp-server {__version__}") or 0)
    add(commands, "init", cmd_init, "create the data directory, database, signing key and first admin", as_json)

    serve = add(commands, "serve", cmd_serve, "serve the agent API, the review API and the UI")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--tls-cert", metavar="FILE")
    serve.add_argument("--tls-key", metavar="FILE")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--access-log", action="store_true", help="log every request (off by default: agents call often)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (PostgreSQL only; default 1)")

    user = commands.add_parser("user", help="manage reviewers and admins").add_subparsers(dest="user_command", metavar="ACTION", required=True)
    user_add = add(user, "add", cmd_user_add, "add a user with a generated password and API token", as_json)
    user_add.add_argument("name")
    user_add.add_argument("--role", required=True, choices=list(ROLE_CHOICES))
    user_add.add_argument(
        "--vendor", action="append", metavar="NAME",
        help="limit a reviewer to this existing vendor's records (repeat for several); a vendor_lead needs exactly one",
    )  # fmt: skip

    token = commands.add_parser("token", help="enrollment tokens").add_subparsers(dest="token_command", metavar="ACTION", required=True)
    token_create = add(token, "create", cmd_token_create, "create an enrollment token for a vendor", as_json)
    token_create.add_argument("--vendor", required=True)
    token_create.add_argument("--uses", type=int, default=1, help="how many agents may enroll with it (default 1)")
    token_create.add_argument("--expires-in", default="7d", help="lifetime like 12h, 7d, 2w (default 7d)")

    agent = commands.add_parser("agent", help="enrolled agents").add_subparsers(dest="agent_command", metavar="ACTION", required=True)
    agent_list = add(agent, "list", cmd_agent_list, "list agents with their health", as_json)
    agent_list.add_argument("--vendor")
    agent_list.add_argument("--status", choices=["online", "offline", "revoked"])
    agent_revoke = add(agent, "revoke", cmd_agent_revoke, "refuse every further call from an agent", as_json)
    agent_revoke.add_argument("agent_id")

    vendor = commands.add_parser("vendor", help="vendors").add_subparsers(dest="vendor_command", metavar="ACTION", required=True)
    vendor_ranges = add(vendor, "ranges", cmd_vendor_ranges, "set the address ranges a vendor's agents may call from (none: any)", as_json)
    vendor_ranges.add_argument("name")
    vendor_ranges.add_argument("cidrs", nargs="*", metavar="CIDR")

    signatures = commands.add_parser("signatures", help="published rule bundles").add_subparsers(dest="signatures_command", metavar="ACTION", required=True)
    publish = add(signatures, "publish", cmd_signatures_publish, "publish a pack (.yar), a fingerprint index (.fp) or a directory of both as a new version", as_json)
    publish.add_argument("path")
    publish.add_argument("--vendor", action="append", metavar="NAME", help="only this vendor's agents get these packs and indexes (repeatable; default: every vendor)")
    publish.add_argument("--remove", action="append", metavar="PACK", help="also take this pack or index out of the new version (repeatable)")
    publish.add_argument("--note", default="", help="why, for the version list and the audit log")
    rollback = add(signatures, "rollback", cmd_signatures_rollback, "publish an earlier version's packs again as a new version", as_json)
    rollback.add_argument("version", type=int)
    add(signatures, "list", cmd_signatures_list, "versions, their packs and indexes, and how many agents run each", as_json)

    devices = commands.add_parser("devices", help="USB device control per vendor").add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    devices_show = add(devices, "show", cmd_devices_show, "a vendor's device policy and the exceptions in force", as_json)
    devices_show.add_argument("--vendor", required=True)
    devices_set = add(devices, "set", cmd_devices_set, "set what a vendor's agents do with removable volumes not allowed", as_json)
    devices_set.add_argument("--vendor", required=True)
    devices_set.add_argument("--action", required=True, choices=["audit", "read-only", "block"])
    devices_set.add_argument("--allow", action="extend", nargs="+", metavar="VID:PID:SERIAL", help="allowed devices (patterns with * and ?; empty parts: any; ' # note' after)")
    devices_except = add(devices, "except", cmd_devices_except, "let one device through for a while (audited)", as_json)
    devices_except.add_argument("--vendor", required=True)
    devices_except.add_argument("--device", required=True, metavar="VID:PID:SERIAL")
    devices_except.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="like 30m, 4h, 2d (at most 90d)")
    devices_except.add_argument("--reason", required=True)
    devices_revoke = add(devices, "revoke", cmd_devices_revoke, "end an exception now", as_json)
    devices_revoke.add_argument("--vendor", required=True)
    devices_revoke.add_argument("exception_id", type=int)

    egress = commands.add_parser("egress", help="allowed git remotes and upload destinations per vendor").add_subparsers(dest="egress_command", metavar="ACTION", required=True)
    add(egress, "show", cmd_egress_show, "a vendor's allowed remotes and whether egress to them is reported", as_json).add_argument("vendor")
    for change, what in (("allow", "allow pushes and uploads to these places (audited)"), ("disallow", "stop allowing these patterns (audited)")):
        patterns = add(egress, change, cmd_egress_change, what, as_json)
        patterns.add_argument("vendor")
        patterns.add_argument("patterns", nargs="+", metavar="PATTERN", help="host[:port]/path-glob (* within a part, ** across) or /local/path-glob")
        patterns.set_defaults(change=change)
    report = add(egress, "report-allowed", cmd_egress_change, "keep egress to allowed places as low-severity events (on) or drop it (off)", as_json)
    report.add_argument("vendor")
    report.add_argument("switch", choices=["on", "off"])
    report.set_defaults(change="report-allowed")

    quarantine = commands.add_parser("quarantine", help="files agents quarantined").add_subparsers(dest="quarantine_command", metavar="ACTION", required=True)
    quarantine_list = add(quarantine, "list", cmd_quarantine_list, "quarantined files, newest first", as_json)
    quarantine_list.add_argument("--vendor")
    quarantine_list.add_argument("--agent", metavar="AGENT_ID")
    quarantine_list.add_argument("--state", help="held, release_requested, released, delete_requested, deleted or failed")
    for op, what in (("release", "ask the holding agent to restore the file"), ("delete", "ask the holding agent to delete its encrypted copy")):
        request = add(quarantine, op, cmd_quarantine_request, what, as_json)
        request.add_argument("quarantine_id")
        request.set_defaults(op=op)

    from server.mark_commands import add_parsers as add_mark_parsers

    add_mark_parsers(commands, add, as_json, _bound)

    export = commands.add_parser("export", help="export data").add_subparsers(dest="export_command", metavar="WHAT", required=True)
    export_events = add(export, "events", cmd_export_events, "write events for a SIEM or an archive")
    export_events.add_argument("--format", default="jsonl", choices=["jsonl", "csv", "cef"])
    export_events.add_argument("--since", type=_timestamp, help="occurred at or after (ISO 8601 with a zone)")
    export_events.add_argument("--until", type=_timestamp)
    export_events.add_argument("--vendor")
    export_events.add_argument("--min-severity", choices=SEVERITIES)
    export_events.add_argument("--output", "-o", metavar="FILE")

    denylist = commands.add_parser("denylist", help="networks refused for agent calls and logins").add_subparsers(dest="denylist_command", metavar="ACTION", required=True)
    denylist_add = add(denylist, "add", cmd_denylist_add, "refuse a CIDR range: for every caller, or for one vendor's agents and scoped accounts (audited)", as_json)
    denylist_add.add_argument("cidr", metavar="CIDR")
    denylist_add.add_argument("--vendor", metavar="NAME", help="only this vendor's agents and the accounts scoped to it (default: every caller)")
    denylist_add.add_argument("--note", default="", help="why, for the list and the audit log")
    add(denylist, "list", cmd_denylist_list, "denied ranges and the latest refusals", as_json)
    add(denylist, "remove", cmd_denylist_remove, "lift a denied range (audited)", as_json).add_argument("entry_id", type=int, metavar="ID")
    return parser


def cmd_denylist_add(args: argparse.Namespace) -> int:
    from server.store import denylist

    if len(args.note) > 500:
        raise ValueError("--note is at most 500 characters")
    with _collector(args) as collector, collector.db.write() as conn:
        entry = denylist.add(conn, cidr=args.cidr, vendor=args.vendor, note=args.note, actor=_actor(), address=None, now=collector.clock())
    _print(args, entry, f"denied {entry['cidr']} for {entry['vendor'] or 'every caller'} (id {entry['id']}); every collector applies it within {denylist.REFRESH_S:g} s")
    return EXIT_OK


def cmd_denylist_list(args: argparse.Namespace) -> int:
    from server.store import denylist

    with _collector(args) as collector, collector.db.read() as conn:
        entries, refusals = denylist.list_all(conn), denylist.refusals(conn)
    lines = [f"{'ID':>5}  {'RANGE':43}  {'APPLIES TO':20}  NOTE"]
    lines += [f"{e['id']:>5}  {e['cidr']:43}  {(e['vendor'] or 'every caller')[:20]:20}  {e['note']}" for e in entries]
    lines += ["", f"{'REFUSED':7}  {'ADDRESS':39}  {'COUNT':>8}  LAST (UTC)"]
    lines += [f"{r['kind']:7}  {r['address']:39}  {r['count']:>8}  {r['last_seen_at']}" for r in refusals]
    _print(args, {"items": entries, "refusals": refusals}, lines)
    return EXIT_OK


def cmd_denylist_remove(args: argparse.Namespace) -> int:
    from server.store import denylist

    with _collector(args) as collector, collector.db.write() as conn:
        denylist.remove(conn, entry_id=args.entry_id, actor=_actor(), address=None, now=collector.clock())
    _print(args, {"ok": True, "id": args.entry_id}, f"removed denied range {args.entry_id}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    log_handler = logging.StreamHandler()
    log_handler.setFormatter(TerminalFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[log_handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The data directory holds the database and the signing key: nothing in it is for other users.
    os.umask(0o077)
    from server.bootstrap import NotInitialized
    from server.errors import CollectorError
    from server.settings import SettingsError

    try:
        return handler(args)
    except (CollectorError, SettingsError, NotInitialized, ValueError) as exc:
        echo(*f"dlp-server: {exc}".split("\n"), file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
