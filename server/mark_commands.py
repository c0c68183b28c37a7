"""``dlp-server marks apply|list|canary`` and ``dlp-server trace``: watermarks and canaries from the command line.

Apply and trace work in chunks of server/marking.py's MAX_FILES files (each chunk one audited
call), so a benchmark or a git hook may pass thousands of files. Exit codes follow what a script
needs to branch on: apply 0 when every file was marked, 1 when some could not be, 2 on an error;
trace 0 when nothing was found, 1 when a registered mark was (whatever else happened), else 2 when
a file could not be read or traced. Either command reports a file it cannot read and goes on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from agent.display import echo
from server import decoys

EXIT_NONE, EXIT_SOME, EXIT_FAILED = 0, 1, 2
CHUNK_BYTES = 64 << 20
"""Files read into memory per chunk: as much as one API request may carry."""


def _chunks(paths: Sequence[str], limit: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for path in paths:
        try:
            length = os.path.getsize(path)
        except OSError:
            length = 0
        if chunk and (len(chunk) >= limit or size + length > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(path)
        size += length
    if chunk:
        yield chunk


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _line(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(payload), flush=True)
    else:
        echo(text)


def _failed(exc: BaseException) -> int:
    echo(*f"dlp-server: {exc}".split("\n"), file=sys.stderr)
    return EXIT_FAILED


def _errors() -> tuple[type[BaseException], ...]:
    from server.bootstrap import NotInitialized
    from server.errors import CollectorError
    from server.settings import SettingsError

    return (CollectorError, SettingsError, NotInitialized, ValueError, OSError)


def cmd_apply(args: argparse.Namespace, collector_of: Callable[[argparse.Namespace], Any], actor: str) -> int:
    """Marked copies of FILE... written to --out DIR under their base names; never over an input."""
    from server import marking
    from server.keys import marks_key

    try:
        os.makedirs(args.out, exist_ok=True)
        inputs = {os.path.realpath(p) for p in args.files}
        seen: set[str] = set()
        refused = 0
        with collector_of(args) as collector:
            key = marks_key(collector.settings.data_dir)
            for chunk in _chunks(args.files, marking.MAX_FILES):
                targets: dict[int, str] = {}
                files: list[tuple[str, bytes]] = []
                for path in chunk:
                    target = os.path.join(args.out, os.path.basename(path))
                    real = os.path.realpath(target)
                    problem = "the marked copy would overwrite an input" if real in inputs else "another input has the same name" if real in seen else None
                    if problem is not None:
                        refused += 1
                        _line(args, {"path": path, "error": problem}, f"{path}: not marked: {problem}")
                        continue
                    try:
                        data = _read(path)
                    except OSError as exc:  # reported like a file no marker takes: the other files are still marked
                        refused += 1
                        _line(args, {"path": path, "error": exc.strerror or str(exc)}, f"{path}: not marked: {exc.strerror or exc}")
                        continue
                    seen.add(real)
                    targets[len(files)] = target
                    files.append((path, data))
                if not files:
                    continue
                results = marking.apply(collector.db, key=key, files=files, vendor=args.vendor, seat=args.seat, actor=actor, now=collector.clock(), note=args.note)
                for index, result in enumerate(results):
                    path, target = files[index][0], targets[index]
                    if isinstance(result, marking.Refused):
                        refused += 1
                        _line(args, {"path": path, "error": result.error}, f"{path}: not marked: {result.error}")
                        continue
                    with open(target, "wb") as handle:
                        handle.write(result.data)
                    payload = {
                        "path": path,
                        "out": target,
                        "mark_id": result.mark_id,
                        "format": result.format,
                        "carriers": list(result.carriers),
                        "size": result.size,
                        "marked_size": result.marked_size,
                    }
                    _line(args, payload, f"{path} -> {target}  {result.mark_id}  {result.format}  {','.join(result.carriers)}")
    except _errors() as exc:
        return _failed(exc)
    return EXIT_SOME if refused else EXIT_NONE


def cmd_trace(args: argparse.Namespace, collector_of: Callable[[argparse.Namespace], Any], actor: str) -> int:
    """One line per file: the registered marks it carries, strongest evidence first."""
    from server import marking
    from server.keys import marks_key

    found = failed = False
    try:
        with collector_of(args) as collector:
            key = marks_key(collector.settings.data_dir)
            for chunk in _chunks(args.files, marking.MAX_FILES):
                files: list[tuple[str, bytes]] = []
                for path in chunk:
                    try:
                        files.append((path, _read(path)))
                    except OSError as exc:
                        failed = True
                        _line(args, {"path": path, "error": exc.strerror or str(exc)}, f"{path}: {exc.strerror or exc}")
                if not files:
                    continue
                items = marking.trace(collector.db, key=key, files=files, actor=actor, now=collector.clock())
                for (path, _), item in zip(files, items):
                    found = found or bool(item["marks"])
                    payload = {"path": path, "sha256": item["sha256"], "marks": item["marks"]}
                    if item.get("error"):  # not read: "no mark" would be a claim nobody checked
                        failed = True
                        payload["error"] = item["error"]
                    _line(args, payload, _trace_text(path, item))
    except _errors() as exc:
        return _failed(exc)
    return EXIT_SOME if found else EXIT_FAILED if failed else EXIT_NONE


def _trace_text(path: str, item: dict[str, Any]) -> str:
    if item.get("error"):
        return f"{path}: not read: {item['error']}"
    if not item["marks"]:
        return f"{path}: no registered mark"
    lines = [f"{path}:"]
    for mark in item["marks"]:
        evidence = mark["evidence"]
        lines.append(
            f"  {mark['mark_id']}  {mark['kind']}  vendor {mark['vendor']}  seat {mark['seat'] or '(whole vendor)'}  minted {mark['minted_at']}"
            f"  {evidence['strength']} ({', '.join(evidence['carriers'])}; {evidence['frames']} frame(s))"
        )
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace, collector_of: Callable[[argparse.Namespace], Any], actor: str) -> int:
    from server.store import marks as mark_store

    with collector_of(args) as collector, collector.db.read() as conn:
        items = mark_store.list_marks(conn, vendor=args.vendor, seat=args.seat, kind=args.kind, limit=args.limit)
    if args.json:
        print(json.dumps({"items": items}))
        return EXIT_NONE
    lines = [f"{'MARK':19}  {'KIND':9}  {'VENDOR':16}  {'SEAT':20}  {'MINTED':24}  SUBJECT"]
    for m in items:
        subject = m["subject"].get("name") or "-"
        lines.append(f"{m['mark_id']:19}  {m['kind']:9}  {m['vendor'][:16]:16}  {(m['seat'] or '-')[:20]:20}  {m['created_at']:24}  {subject}")
    echo(*lines)
    return EXIT_NONE


def cmd_canary(args: argparse.Namespace, collector_of: Callable[[argparse.Namespace], Any], actor: str) -> int:
    """A decoy for the vendor written to --out; its rule goes out in a new signature version."""
    from server.canaries import create_canary
    from server.keys import marks_key

    os.makedirs(args.out, exist_ok=True)
    with collector_of(args) as collector:
        key = marks_key(collector.settings.data_dir)
        with collector.db.write() as conn:
            made = create_canary(conn, key=key, vendor=args.vendor, seat=args.seat, kind=args.kind, actor=actor, now=collector.clock())
    target = os.path.join(args.out, os.path.basename(made.name))
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never over a file already there
    with os.fdopen(fd, "wb") as handle:
        handle.write(made.data)
    payload = {"mark_id": made.mark_id, "kind": made.kind, "name": made.name, "path": target, "signature_version": made.signature_version, "sha256": hashlib.sha256(made.data).hexdigest()}
    _line(args, payload, f"{target}  {made.mark_id}  {made.kind} canary for {args.vendor}; its rule is in signature version {made.signature_version}")
    return EXIT_NONE


def add_parsers(commands: Any, add: Callable[..., argparse.ArgumentParser], as_json: argparse.ArgumentParser, bind: Callable[[Callable[..., int]], Callable[[argparse.Namespace], int]]) -> None:
    """``marks ...`` and ``trace`` in the collector's parser (server/cli.py); ``bind`` gives a handler its collector and actor."""
    marks = commands.add_parser("marks", help="watermarks and canaries that trace a leak to a vendor's seat").add_subparsers(dest="marks_command", metavar="ACTION", required=True)
    apply = add(marks, "apply", bind(cmd_apply), "write watermarked copies of files for a vendor's seat (audited)", as_json)
    apply.add_argument("files", nargs="+", metavar="FILE")
    apply.add_argument("--vendor", required=True)
    apply.add_argument("--seat", required=True, help="the person or workstation the copies are for")
    apply.add_argument("--out", required=True, metavar="DIR", help="where the marked copies go, under their own names")
    apply.add_argument("--note", default=None, help="why, for the mark list and the audit log")
    listing = add(marks, "list", bind(cmd_list), "marks minted, newest first", as_json)
    listing.add_argument("--vendor")
    listing.add_argument("--seat")
    listing.add_argument("--kind", choices=["watermark", "canary"])
    listing.add_argument("--limit", type=int, default=100)
    canary = add(marks, "canary", bind(cmd_canary), "make a canary decoy for a vendor; its rule joins the vendor's signed bundle (audited)", as_json)
    canary.add_argument("--vendor", required=True)
    canary.add_argument("--seat")
    canary.add_argument("--kind", required=True, choices=decoys.KINDS)
    canary.add_argument("--out", default=".", metavar="DIR", help="where the decoy is written (default: here)")
    trace = add(commands, "trace", bind(cmd_trace), "report the registered marks files carry: vendor, seat, date, evidence (audited)", as_json)
    trace.add_argument("files", nargs="+", metavar="FILE")
    trace.epilog = "exit status: 0 no file carries a registered mark; 1 some file does (even when others could not be read); 2 otherwise, when a file could not be read or traced, or on an error"
    apply.epilog = "exit status: 0 every file marked; 1 some file not marked (unreadable, unmarkable, or its copy would overwrite an input); 2 on an error"
