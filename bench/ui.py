"""Review UI page times on a SQLite collector holding 1,000,000 events.

Usage: python bench/ui.py [--events 1000000] [--runs 5] [--keep DIR]

Fills a fresh collector (``dlp-server init``) straight through SQLAlchemy Core in large
transactions: 6 vendors of unequal size, 300 agents, 40 rules with a long tail, severities
mostly low, 60 days of office-hours activity, files copied repeatedly (shared hashes) and
a few hundred USB sticks. Then a real ``dlp-server serve`` is started, the admin logs in
through the login form, and each page is fetched ``--runs`` times after one warm-up; the
table shows the median and the slowest run (full response, body read). Target: each well
under a second. ``--keep DIR`` reuses (or leaves) the filled data directory.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from serving import init_collector, serve_collector, sqlite_url  # noqa: E402

from agent.events import SEVERITY_RANK  # noqa: E402
from server.db.engine import Database  # noqa: E402
from server.db.tables import agent_addresses, agents, event_rules, events, vendors  # noqa: E402

VENDORS = {"acme-bpo": 0.38, "globex-it": 0.24, "initech": 0.15, "umbrella-ops": 0.11, "hooli-dev": 0.08, "vandelay-import": 0.04}
AGENTS = 300
DAYS = 60
CHANNELS = (("file", "file.write", 0.58), ("usb", "usb.write", 0.16), ("clipboard", "clipboard.copy", 0.22), ("agent", "spool.dropped", 0.04))
SEVERITIES = (("low", 0.52), ("medium", 0.28), ("high", 0.15), ("critical", 0.05))
RULES = [f"{ns}.{name}_{n}" for n, (ns, name) in enumerate([("credentials", "aws_key"), ("credentials", "private_key_pem"), ("copyright", "proprietary_header"),
         ("confidentiality", "marking"), ("canary", "token"), ("source", "ledger_repo"), ("source", "billing_repo"), ("documents", "contract")] * 5)]
STATUSES = (("new", 0.80), ("investigating", 0.06), ("benign", 0.12), ("confirmed_leak", 0.02))
BATCH = 50_000
CACHE_KIB = 512 * 1024


def _chooser(rng: random.Random, weighted: tuple[tuple[Any, float], ...] | list[tuple[Any, float]]) -> Any:
    """A function picking one value by weight (cumulative weights computed once, not per call)."""
    values = [v for v, _ in weighted]
    cumulative = list(itertools.accumulate(w for _, w in weighted))
    return lambda: rng.choices(values, cum_weights=cumulative)[0]


def _when(rng: random.Random, now: datetime) -> datetime:
    """A moment in the last DAYS days, weekdays and office hours far more likely."""
    while True:
        day = now - timedelta(days=rng.randrange(DAYS))
        if day.weekday() >= 5 and rng.random() < 0.8:
            continue
        hour = rng.choice((8, 9, 9, 10, 10, 11, 11, 12, 13, 14, 14, 15, 15, 16, 16, 17, 18, 21))
        moment = day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60), microsecond=rng.randrange(1_000_000))
        if moment <= now:
            return moment


def _agents(rng: random.Random, vendor_ids: dict[str, int], now: datetime) -> list[dict[str, Any]]:
    rows = []
    names = list(VENDORS)
    for n in range(AGENTS):
        vendor = rng.choices(names, weights=[VENDORS[v] for v in names])[0]
        seen = now - timedelta(seconds=rng.randrange(30)) if rng.random() < 0.85 else now - timedelta(hours=rng.randrange(2, 300))
        rows.append({
            "id": f"{rng.getrandbits(128):032x}", "vendor_id": vendor_ids[vendor], "vendor": vendor, "secret_hash": "0" * 64, "hostname": f"{vendor[:4]}-ws-{n:04d}",
            "os": "linux", "machine_id": f"{rng.getrandbits(128):032x}", "agent_version": rng.choice(("0.1.0", "0.1.0", "0.2.0")), "ruleset_version": "148583d2a3f6984c",
            "bundle_version": rng.choice((3, 3, 3, 2, None)), "ruleset_error": None if rng.random() < 0.98 else "packs/x.yar:3: syntax error",
            "spool_depth": rng.choice((0, 0, 0, 3, 120)), "dropped": rng.choice((0, 0, 0, 0, 17)), "sources": {"files": {"ok": True}},
            "status": "online" if now - seen < timedelta(minutes=5) else "offline", "enrolled_at": now - timedelta(days=DAYS + 5),
            "last_seen_at": seen, "last_heartbeat_at": seen, "last_ip": f"10.{n // 250}.{n % 250}.7", "user": f"user{n:04d}",
        })
    return rows


def _records(rng: random.Random, agent_rows: list[dict[str, Any]], count: int, now: datetime) -> Iterator[tuple[dict[str, Any], list[str]]]:
    weights = [VENDORS[a["vendor"]] / sum(1 for b in agent_rows if b["vendor"] == a["vendor"]) for a in agent_rows]
    hashes = [f"{n:064x}" for n in range(1, 60_001)]
    serials = [f"SN{n:06d}" for n in range(400)]
    rule_cumulative = list(itertools.accumulate(1 / (n + 1) for n in range(len(RULES))))
    channel = _chooser(rng, [((c, k), w) for c, k, w in CHANNELS])
    severity_of = _chooser(rng, SEVERITIES)
    moments = sorted(_when(rng, now) for _ in range(count))
    chosen = rng.choices(agent_rows, weights=weights, k=count)
    for occurred, agent in zip(moments, chosen):
        kind_channel, kind = channel()
        severity = None if kind_channel == "agent" else severity_of()
        rules = sorted(set(rng.choices(RULES, cum_weights=rule_cumulative, k=rng.choice((1, 1, 1, 2, 3))))) if severity else []
        user = agent["user"] if rng.random() < 0.93 else f"user{rng.randrange(AGENTS):04d}"
        # Some files travel a lot (a Pareto tail of shared hashes), most are seen once or twice.
        sha = hashes[min(int(rng.paretovariate(1.2)) - 1, len(hashes) - 1) if rng.random() < 0.3 else rng.randrange(len(hashes))]
        name = f"{rng.getrandbits(40):010x}"
        if kind_channel == "usb":
            device = {"serial": rng.choice(serials), "vendor": "SanDisk", "model": "Ultra", "fstype": "exfat", "mountpoint": "/media/stick"}
            path = f"/media/stick/{rng.choice(('backup', 'export', 'src', 'docs'))}/{name}.zip"
        else:
            device, path = None, f"/home/{user}/Documents/{name}.docx"
        record = {
            "schema": 1, "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "type": kind, "channel": kind_channel,
            "occurred_at": occurred.isoformat().replace("+00:00", "Z"), "host": agent["hostname"], "user": user, "agent_version": agent["agent_version"],
            "path": path if kind_channel != "agent" else None, "size": rng.randrange(100, 5_000_000), "sha256": sha if kind_channel != "agent" else None,
            "status": "match" if severity else None, "severity": severity, "device": device,
            "matches": [{"rule": r, "namespace": r.split(".")[0], "severity": severity, "category": "source_code", "tags": [], "member": None, "offsets": [rng.randrange(9000)]} for r in rules],
        }
        yield record, rules


def fill(database_url: str, count: int, *, seed: int = 7) -> None:
    """Vendors, agents and ``count`` events, written in transactions of BATCH events."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    db = Database(database_url)
    with db.write() as conn:
        for name in VENDORS:
            conn.execute(vendors.insert().values(name=name, allowed_cidrs=["10.0.0.0/8"], created_at=now - timedelta(days=DAYS + 10)))
        vendor_ids = dict(conn.execute(vendors.select().with_only_columns(vendors.c.name, vendors.c.id)).all())
        agent_rows = _agents(rng, vendor_ids, now)
        conn.execute(agents.insert(), [{k: v for k, v in a.items() if k not in ("vendor", "user")} for a in agent_rows])
        conn.execute(agent_addresses.insert(), [
            {"agent_id": a["id"], "address": address, "country": country, "expected": expected, "first_seen_at": now - timedelta(days=DAYS), "last_seen_at": a["last_seen_at"], "count": 500}
            for a in agent_rows for address, country, expected in ((a["last_ip"], None, True),) + ((("203.0.113.9", "RU", False),) if rng.random() < 0.03 else ())
        ])
    # Bulk load: secondary indexes are dropped first and built once at the end (a sort instead of
    # a million random B-tree inserts); the same definitions come back from the schema.
    indexes = [*events.indexes, *event_rules.indexes]
    with db.write() as conn:
        for index in indexes:
            index.drop(conn)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    rule_rows: list[dict[str, Any]] = []
    seq = 0
    hosts = {a["hostname"]: a for a in agent_rows}
    status = _chooser(rng, STATUSES)
    for record, rules in _records(rng, agent_rows, count, now):
        seq += 1
        agent = hosts[record["host"]]
        occurred = datetime.fromisoformat(record["occurred_at"].replace("Z", "+00:00"))
        rows.append({
            "seq": seq, "id": record["id"], "agent_id": agent["id"], "vendor_id": agent["vendor_id"], "channel": record["channel"], "type": record["type"],
            "occurred_at": occurred, "received_at": occurred + timedelta(milliseconds=rng.randrange(50, 4000)), "severity": record["severity"],
            "severity_rank": SEVERITY_RANK.get(record["severity"] or "", 0), "status": record["status"], "host": record["host"], "user_name": record["user"],
            "path": record["path"], "sha256": record["sha256"], "device_serial": (record["device"] or {}).get("serial"),
            "body": json.dumps({k: v for k, v in record.items() if v is not None}, separators=(",", ":")), "source_ip": agent["last_ip"], "source_country": None,
            "triage_status": status() if now - occurred > timedelta(days=3) else "new", "assignee_id": None,
        })
        rule_rows.extend({"event_seq": seq, "rule": rule} for rule in rules)
        if len(rows) >= BATCH:
            _flush(db, rows, rule_rows)
            print(f"\r  {seq:,} events ({seq / (time.monotonic() - started):,.0f}/s)", end="", file=sys.stderr, flush=True)
    _flush(db, rows, rule_rows)
    print(f"\r  {seq:,} events in {time.monotonic() - started:.0f} s; indexing", end="", file=sys.stderr, flush=True)
    with db.write() as conn:
        for index in indexes:
            index.create(conn)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    print(f"\r  {seq:,} events stored and indexed in {time.monotonic() - started:.0f} s", file=sys.stderr)
    db.dispose()


def _flush(db: Database, rows: list[dict[str, Any]], rule_rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with db.write() as conn:
        conn.exec_driver_sql(f"PRAGMA cache_size=-{CACHE_KIB}")
        conn.execute(events.insert(), rows)
        if rule_rows:
            conn.execute(event_rules.insert(), rule_rows)
    rows.clear()
    rule_rows.clear()


def fold_all(database_url: str) -> float:
    """Fold every event into the overview's daily counts, as the collector's stats duty does; seconds taken."""
    from server.store import stats

    db = Database(database_url)
    started = time.monotonic()
    later = datetime.now(UTC) + stats.FOLD_LAG
    while True:
        with db.write() as conn:
            if not stats.fold(conn, now=later):
                break
    db.dispose()
    return time.monotonic() - started


def _log_in(client: httpx.Client, user: str, password: str) -> None:
    form = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce, "no login form"
    answer = client.post("/ui/login", data={"username": user, "password": password, "nonce": nonce.group(1), "next": "/ui/events"})
    assert answer.status_code == 200 and "Log out" in answer.text, answer.text[:500]


def _next_link(html: str) -> str:
    found = re.search(r'<a href="([^"]+)" class="button" rel="next">', html)
    assert found, "no next page"
    return found.group(1).replace("&amp;", "&")


def _pages(client: httpx.Client) -> list[tuple[str, str]]:
    """(label, path) of every page to time; page 50 and the detail page are found by browsing."""
    url = "/ui/events"
    for _ in range(49):
        url = _next_link(client.get(url).text)
    busiest = f"{1:064x}"  # the most copied file of the fill
    listing = client.get(f"/ui/events?sha256={busiest}&limit=25").text
    event_id = re.search(r'name="ids" value="([0-9a-f-]{36})"', listing)
    assert event_id
    return [
        ("events, default (newest, 50 a page)", "/ui/events"),
        ("events, vendor + severity filter", "/ui/events?vendor=hooli-dev&severity=critical"),
        ("events, sorted by severity", "/ui/events?sort=severity"),
        ("events, vendor + rule filter, by severity", "/ui/events?vendor=globex-it&rule=documents.contract_7&sort=severity"),
        ("events, page 50 via cursor", url),
        ("event detail (most copied file)", f"/ui/events/{event_id.group(1)}"),
        ("vendors overview (30 days)", "/ui/vendors"),
        ("vendors overview (90 days)", "/ui/vendors?days=90"),
        ("agents (300)", "/ui/agents"),
    ]


def time_pages(base_url: str, user: str, password: str, runs: int) -> list[tuple[str, list[float], int]]:
    results = []
    with httpx.Client(base_url=base_url, timeout=60, follow_redirects=True) as client:
        _log_in(client, user, password)
        for label, path in _pages(client):
            client.get(path)  # warm-up: first use of the statement and pages
            times, size = [], 0
            for _ in range(runs):
                started = time.perf_counter()
                answer = client.get(path)
                times.append(time.perf_counter() - started)
                assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
                size = len(answer.content)
            results.append((label, times, size))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="data directory to fill once and reuse")
    args = parser.parse_args()
    console = Console()
    scratch = None if args.keep else Path(tempfile.mkdtemp(prefix="dlp-bench-ui-"))
    data_dir = args.keep or scratch / "collector"
    login_file = data_dir / "bench-login.json"
    try:
        if not login_file.exists():
            login = init_collector(data_dir, None)
            console.print(f"filling {data_dir} with {args.events:,} events")
            fill(sqlite_url(data_dir / "collector.db"), args.events)
            console.print(f"folded into the overview's daily counts in {fold_all(sqlite_url(data_dir / 'collector.db')):.1f} s")
            login_file.write_text(json.dumps(login))
        login = json.loads(login_file.read_text())
        size = (data_dir / "collector.db").stat().st_size
        with serve_collector(data_dir, log_path=data_dir.parent / "bench-ui-serve.log") as server:
            results = time_pages(server.base_url, login["admin_user"], login["admin_password"], args.runs)
        table = Table(title=f"Review UI on SQLite, {args.events:,} events ({size / 1e9:.1f} GB), {args.runs} runs after a warm-up, {datetime.now(UTC):%Y-%m-%d}")
        for column in ("page", "median ms", "slowest ms", "KB"):
            table.add_column(column, justify="left" if column == "page" else "right")
        for label, times, body in results:
            table.add_row(label, f"{statistics.median(times) * 1000:.0f}", f"{max(times) * 1000:.0f}", f"{body / 1024:.0f}")
        console.print(table)
        slow = [label for label, times, _ in results if statistics.median(times) >= 0.5]
        if slow:
            console.print(f"[red]over half a second: {', '.join(slow)}[/red]")
        return 1 if slow else 0
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
