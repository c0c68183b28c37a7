"""Review pages and API lists at 1,000,000 events and 10,000 cases, as an admin, a vendor-scoped reviewer and a vendor lead.

Usage: python bench/ui.py [--events 1000000] [--cases 10000] [--runs 7] [--data-dir DIR]
                          [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--quick]

A collector is initialised (``dlp-server init``) and filled by bench/ui_fill.py (events through the
collector's own ingest and stats fold, cases, comments, watchlist, saved views), once per set of
parameters: the filled data directory is kept under ``--data-dir`` and reused by later runs (on
PostgreSQL a database named after the parameters, beside the one given, is kept likewise; ``--fresh``
refills). Users come from ``dlp-server user add``: two customer reviewers, a reviewer scoped to one
vendor and that vendor's lead. Then a real ``dlp-server serve`` is started, each account logs in
through the login form (API calls use its API token), and each page is fetched once to warm up
and ``--runs`` times more; the table shows the median and p95 (full response read) and the rows
shown. A page that is not there yet (404) is reported as missing, one an account may not open (403)
as refused; neither is a failure. Target: each well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, select, text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import ui_fill  # noqa: E402
from serving import dlp_server, init_collector, percentile, serve_collector, sqlite_url  # noqa: E402

from server.db.engine import Database  # noqa: E402
from server.db.tables import case_events, cases, events, vendors  # noqa: E402

TARGET_MS = 1000.0
SCOPED_VENDOR = "globex-it"
FILL_VERSION = 2
"""Bumped whenever ui_fill.py changes what it stores, so older cached fills are not reused."""
REVIEWERS = ("rita", "ravi")
SCOPED = "sam-globex"
LEAD = "lena-globex"


@dataclass
class Account:
    role: str
    name: str
    password: str
    token: str


@dataclass
class Result:
    label: str
    role: str
    status: str
    times: list[float] = field(default_factory=list)
    rows: int | None = None


def _fill_key(args: argparse.Namespace) -> str:
    backend = "postgresql" if args.database_url else "sqlite"
    return f"{backend}-{args.events}ev-{args.cases}cases-v{FILL_VERSION}"


def _pg_database(admin_url: str, name: str, *, recreate: bool) -> str:
    """A database ``name`` beside ``admin_url``'s, dropped and created afresh when ``recreate``."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        if recreate or not exists:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def prepare(args: argparse.Namespace, console: Console) -> tuple[Path, dict[str, Any]]:
    """The filled data directory for these parameters (filled now unless a finished fill is kept) and its record."""
    key = _fill_key(args)
    data_dir = args.data_dir / key
    record_file = data_dir / "bench-fill.json"
    if record_file.exists() and not args.fresh:
        console.print(f"reusing {data_dir} (filled {json.loads(record_file.read_text())['filled_at']})")
        return data_dir, json.loads(record_file.read_text())
    shutil.rmtree(data_dir, ignore_errors=True)
    database_url = _pg_database(args.database_url, "dlp_bench_ui_" + key.replace("-", "_"), recreate=True) if args.database_url else None
    started = time.monotonic()
    admin = init_collector(data_dir, database_url)
    url = database_url or sqlite_url(data_dir / "collector.db")
    rng = random.Random(7)
    now = datetime.now(UTC)
    db = Database(url)
    agent_rows = ui_fill.vendors_and_agents(db, rng, now)
    accounts = {"admin": {"role": "admin", "name": admin["admin_user"], "password": admin["admin_password"], "token": admin["api_token"]}}
    for name, role, vendor in ((REVIEWERS[0], "reviewer", None), (REVIEWERS[1], "reviewer", None), (SCOPED, "reviewer", SCOPED_VENDOR), (LEAD, "vendor_lead", SCOPED_VENDOR)):
        made = dlp_server("user", "add", name, "--role", role, *(("--vendor", vendor) if vendor else ()), data_dir=data_dir)
        label = "scoped reviewer" if vendor and role == "reviewer" else ("vendor lead" if vendor else "reviewer")
        accounts.setdefault(label, {"role": label, "name": name, "password": made["password"], "token": made["api_token"]})
    timings: dict[str, float] = {}
    mark = time.monotonic()
    console.print(f"filling {data_dir} with {args.events:,} events and {args.cases:,} cases")
    ui_fill.load_events(db, rng, agent_rows, args.events, now)
    timings["events"] = time.monotonic() - mark
    mark = time.monotonic()
    ui_fill.fold(db)
    timings["fold"] = time.monotonic() - mark
    mark = time.monotonic()
    with db.read() as conn:
        lead_vendor_id = conn.execute(select(vendors.c.id).where(vendors.c.name == SCOPED_VENDOR)).scalar_one()
    ui_fill.load_cases(db, rng, args.cases, now, reviewer_names=[admin["admin_user"], *REVIEWERS], lead_vendor=SCOPED_VENDOR, lead_vendor_id=lead_vendor_id)
    timings["cases"] = time.monotonic() - mark
    mark = time.monotonic()
    ui_fill.analyze(db)
    timings["analyze"] = time.monotonic() - mark
    db.dispose()
    timings["total"] = time.monotonic() - started
    # CPU seconds beside the wall clock: on a shared machine the wall clock says more about the neighbours.
    timings["cpu (with workers)"] = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for field in ("ru_utime", "ru_stime"))
    record = {"filled_at": f"{now:%Y-%m-%d %H:%M}", "database_url": url, "accounts": accounts, "seconds": timings}
    record_file.write_text(json.dumps(record, indent=1))
    return data_dir, record


def _targets(url: str, scoped_vendor_id: int) -> dict[str, str]:
    """Things to open that each account may see: a case, a user, a device and a host of the scoped vendor."""
    db = Database(url)
    with db.read() as conn:
        in_vendor = events.c.vendor_id == scoped_vendor_id
        # An agent's event: the collector's own (agent.offline after the server starts) name no user.
        row = conn.execute(select(events.c.user_name, events.c.host).where(in_vendor, events.c.user_name.is_not(None)).order_by(events.c.seq.desc()).limit(1)).one()
        device = conn.execute(select(events.c.device_serial).where(in_vendor, events.c.device_serial.is_not(None)).order_by(events.c.seq.desc()).limit(1)).scalar_one()
        case_id = conn.execute(
            select(cases.c.id).join(case_events, case_events.c.case_id == cases.c.id).join(events, events.c.seq == case_events.c.event_seq)
            .where(in_vendor).order_by(cases.c.event_count.desc(), cases.c.id).limit(1)
        ).scalar_one()  # fmt: skip
    db.dispose()
    return {"user": row.user_name, "host": row.host, "device": device, "case": str(case_id), "sha256": ui_fill.BUSIEST_SHA256, "vendor": SCOPED_VENDOR}


def _log_in(client: httpx.Client, account: Account) -> None:
    form = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce, "no login form"
    answer = client.post("/ui/login", data={"username": account.name, "password": account.password, "nonce": nonce.group(1), "next": "/ui/events"})
    assert answer.status_code == 303, (answer.status_code, answer.text[:500])
    assert "Log out" in client.get("/ui/events").text, "the login did not take"


def _deep_page(client: httpx.Client, pages: int) -> str | None:
    """The event list's URL ``pages`` pages in, following each page's next link."""
    url = "/ui/events"
    for _ in range(pages - 1):
        found = re.search(r'<a href="([^"]+)" class="button" rel="next">', client.get(url).text)
        if not found:
            return None
        url = found.group(1).replace("&amp;", "&")
    return url


def _pages(client: httpx.Client, role: str, t: dict[str, str]) -> list[tuple[str, str | None]]:
    """(label, path) of every page and API list to time for one account; None: could not be found."""
    first = client.get("/ui/events").text
    event = re.search(r'href="/ui/events/([0-9a-f-]{36})"', first)
    # The user as this account sees them (a vendor lead sees a pseudonym) from the list's own link.
    shown_user = re.search(r'href="/ui/events\?user=([^"&]+)"', first)
    user = shown_user.group(1) if shown_user else quote(t["user"])
    scoped = f"vendor={t['vendor']}&" if role == "admin" else ""
    return [
        ("events, first page", "/ui/events"),
        ("events, severity + channel filter", f"/ui/events?{scoped}severity=high,critical&channel=usb"),
        ("events, page 50 via cursor", _deep_page(client, 50)),
        ("events, sha256 search (most copied)", f"/ui/events?sha256={t['sha256']}"),
        ("events, user filter", f"/ui/events?user={user}"),
        ("event detail", f"/ui/events/{event.group(1)}" if event else None),
        ("vendors overview (30 days)", "/ui/vendors"),
        ("vendors overview (90 days)", "/ui/vendors?days=90"),
        ("agents", "/ui/agents"),
        ("cases, list (soonest due first)", "/ui/cases"),
        ("cases, by last change", "/ui/cases?sort=updated"),
        ("cases, open, assigned, overdue", "/ui/cases?status=open&assignee=rita&overdue=on"),
        ("cases, of one vendor, by severity", f"/ui/cases?vendor={t['vendor']}&sort=severity"),
        ("case detail", f"/ui/cases/{t['case']}"),
        ("people (by risk)", "/ui/people"),
        ("user timeline", f"/ui/timeline?user={quote(t['user'])}"),
        ("device timeline", f"/ui/timeline?device={quote(t['device'])}"),
        ("host timeline", f"/ui/timeline?host={quote(t['host'])}"),
        ("watchlist", "/ui/watchlist"),
        ("sessions", "/ui/sessions"),
        ("API events, first 100", "/api/v1/events"),
        ("API events, sha256", f"/api/v1/events?sha256={t['sha256']}"),
        ("API cases", "/api/v1/cases"),
        ("API case", f"/api/v1/cases/{t['case']}"),
        ("API case export (evidence zip)", f"/api/v1/cases/{t['case']}/export"),
        ("API people", "/api/v1/people"),
        ("API user timeline", f"/api/v1/timeline?user={quote(t['user'])}"),
    ]


def _rows(answer: httpx.Response) -> int | None:
    if answer.headers.get("content-type", "").startswith("application/json"):
        items = answer.json().get("items")
        return len(items) if isinstance(items, list) else None
    bodies = re.findall(r"<tbody.*?</tbody>", answer.text, flags=re.S)
    return sum(body.count("<tr") for body in bodies) if bodies else None


def time_account(base_url: str, account: Account, t: dict[str, str], runs: int) -> list[Result]:
    results = []
    with httpx.Client(base_url=base_url, timeout=120, follow_redirects=False) as client:
        _log_in(client, account)
        api = {"Authorization": f"Bearer {account.token}"}
        for label, path in _pages(client, account.role, t):
            if path is None:
                results.append(Result(label, account.role, "not found"))
                continue
            headers = api if path.startswith("/api/") else {}
            answer = client.get(path, headers=headers)  # warm-up: first use of the statements and templates
            if answer.status_code in (403, 404):
                results.append(Result(label, account.role, "refused" if answer.status_code == 403 else "missing"))
                continue
            if answer.status_code != 200:
                results.append(Result(label, account.role, f"HTTP {answer.status_code}"))
                continue
            result = Result(label, account.role, "ok", rows=_rows(answer))
            for _ in range(runs):
                started = time.perf_counter()
                answer = client.get(path, headers=headers)
                answer.read()
                result.times.append(time.perf_counter() - started)
            results.append(result)
    return results


def _table(results: list[Result], title: str) -> Table:
    table = Table(title=title)
    for column in ("page", "role", "median ms", "p95 ms", "rows", "verdict"):
        table.add_column(column, justify="left" if column in ("page", "role", "verdict") else "right")
    for r in results:
        if not r.times:
            table.add_row(r.label, r.role, "", "", "", r.status)
            continue
        median, p95 = statistics.median(r.times) * 1000, percentile(r.times, 0.95) * 1000
        verdict = "ok" if p95 < TARGET_MS else "[red]SLOW[/red]"
        table.add_row(r.label, r.role, f"{median:.0f}", f"{p95:.0f}", "" if r.rows is None else str(r.rows), verdict)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7, help="timed fetches of each page after one warm-up")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/dlp-bench-ui"), help="where filled collectors are kept, one per set of parameters")
    parser.add_argument("--database-url", help="PostgreSQL server to use (a database is created beside this one); default SQLite")
    parser.add_argument("--fresh", action="store_true", help="refill even if a fill of these parameters is kept")
    parser.add_argument("--quick", action="store_true", help="100,000 events, 1,000 cases, 3 runs")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args()
    if args.quick:
        args.events, args.cases, args.runs = 100_000, 1_000, 3
    console = Console(width=150)
    data_dir, record = prepare(args, console)
    console.print(f"fill: {', '.join(f'{k} {v:.0f} s' for k, v in record['seconds'].items())}")
    url = record["database_url"]
    db = Database(url)
    with db.read() as conn:
        scoped_vendor_id = conn.execute(select(vendors.c.id).where(vendors.c.name == SCOPED_VENDOR)).scalar_one()
    db.dispose()
    t = _targets(url, scoped_vendor_id)
    results: list[Result] = []
    load_before = os.getloadavg()[0]
    with serve_collector(data_dir, log_path=data_dir.parent / f"{data_dir.name}-serve.log") as server:
        for role in ("admin", "scoped reviewer", "vendor lead"):
            results.extend(time_account(server.base_url, Account(**record["accounts"][role]), t, args.runs))
    console.print(f"load average (1 min) {load_before:.1f} before the timings, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    size = f"{(data_dir / 'collector.db').stat().st_size / 1e9:.1f} GB, " if backend == "SQLite" else ""
    title = f"Review pages on {backend}, {args.events:,} events, {args.cases:,} cases ({size}{args.runs} runs after a warm-up, {datetime.now(UTC):%Y-%m-%d})"
    order = {label: n for n, label in enumerate(dict.fromkeys(r.label for r in results))}
    results.sort(key=lambda r: order[r.label])  # each page's roles together, in the order they were timed
    console.print(_table(results, title))
    if args.markdown:
        print("| page | role | median ms | p95 ms | rows | verdict |\n|---|---|---|---|---|---|")
        for r in results:
            if r.times:
                p95 = percentile(r.times, 0.95) * 1000
                print(f"| {r.label} | {r.role} | {statistics.median(r.times) * 1000:.0f} | {p95:.0f} | {'' if r.rows is None else r.rows} | {'ok' if p95 < TARGET_MS else 'SLOW'} |")
            else:
                print(f"| {r.label} | {r.role} | | | | {r.status} |")
    failed = [r for r in results if r.status.startswith("HTTP") or (r.times and percentile(r.times, 0.95) * 1000 >= TARGET_MS)]
    if failed:
        console.print(f"[red]slow or failing: {', '.join(f'{r.label} ({r.role})' for r in failed)}[/red]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
