"""The review UI bench's collector: a million events stored as ingest stores them, ten thousand cases around them.

Events go through the API's own event model (``EventIn``: its bodies are what the collector keeps)
and ``server.store.ingest.ingest`` (its columns, rule index and origin), one call per agent per
chunk inside transactions of ``CHUNK`` events, with the secondary indexes dropped for the load and
built once after it (a sort instead of a million random B-tree inserts). The overview's daily
counts are then folded by ``server.store.stats.fold``, as the collector's duty does. Cases, their
events, comments, history (audit entries), watchlist entries, saved views and reveals are written
with SQLAlchemy Core executemany.

Shapes: 6 vendors of unequal size, 300 agents with one user each (a few users on other hosts),
90 days of office-hours activity, severities mostly low, 40 rules with a long tail, files copied
repeatedly (one hash in about a sixth of the events), 400 USB sticks, clipboard owners, git pushes,
and a few of the collector's own ``access`` events of no vendor.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import random
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import func, select

from agent.events import SEVERITY_RANK
from server.api.schemas import EventIn
from server.db.engine import Database
from server.db.tables import (
    agent_addresses,
    agents,
    case_comments,
    case_events,
    cases,
    event_rules,
    events,
    reveals,
    saved_views,
    users,
    vendors,
    watchlist,
)
from server.store import audit, stats
from server.store import ingest as event_ingest
from server.store.agents import AgentIdentity

VENDORS = {"acme-bpo": 0.38, "globex-it": 0.24, "initech": 0.15, "umbrella-ops": 0.11, "hooli-dev": 0.08, "vandelay-import": 0.04}
AGENTS = 300
DAYS = 90
KINDS = (
    (("file", "file.write"), 0.52), (("usb", "usb.write"), 0.15), (("clipboard", "clipboard.copy"), 0.22),
    (("egress", "git.push"), 0.06), (("agent", "spool.dropped"), 0.03), (("usb", "usb.mount"), 0.02),
)  # fmt: skip
SEVERITIES = (("low", 0.52), ("medium", 0.28), ("high", 0.15), ("critical", 0.05))
RULES = [
    f"{ns}.{name}_{n}"
    for n, (ns, name) in enumerate(
        [
            ("credentials", "aws_key"),
            ("credentials", "private_key_pem"),
            ("copyright", "proprietary_header"),
            ("confidentiality", "marking"),
            ("canary", "token"),
            ("source", "ledger_repo"),
            ("source", "billing_repo"),
            ("documents", "contract"),
        ]
        * 5  # fmt: skip
    )
]
TRIAGE = (("new", 0.80), ("investigating", 0.06), ("benign", 0.12), ("confirmed_leak", 0.02))
CASE_STATUS = (("open", 0.40), ("investigating", 0.25), ("closed", 0.35))
OUTCOMES = ("benign", "policy_breach", "confirmed_leak")
CHUNK = 20_000
SQLITE_CACHE_KIB = 512 * 1024
BUSIEST_SHA256 = f"{1:064x}"
"""The most copied file of the fill (the Pareto tail's head)."""


def _chooser(rng: random.Random, weighted: tuple[tuple[Any, float], ...]) -> Callable[[], Any]:
    """A function picking one value by weight (cumulative weights computed once, not per call)."""
    values = [v for v, _ in weighted]
    cumulative = list(itertools.accumulate(w for _, w in weighted))
    return lambda: rng.choices(values, cum_weights=cumulative)[0]


def vendors_and_agents(db: Database, rng: random.Random, now: datetime) -> list[dict[str, Any]]:
    """The vendors and AGENTS agents; the agents' rows as stored plus their vendor's name and usual ``user``."""
    names = list(VENDORS)
    with db.write() as conn:
        for name in names:
            conn.execute(vendors.insert().values(name=name, allowed_cidrs=["10.0.0.0/8"], created_at=now - timedelta(days=DAYS + 10)))
        vendor_ids = dict(conn.execute(select(vendors.c.name, vendors.c.id)).all())
        rows = []
        for n in range(AGENTS):
            vendor = rng.choices(names, weights=[VENDORS[v] for v in names])[0]
            seen = now - timedelta(seconds=rng.randrange(30)) if rng.random() < 0.85 else now - timedelta(hours=rng.randrange(2, 300))
            rows.append({
                "id": f"{rng.getrandbits(128):032x}", "vendor_id": vendor_ids[vendor], "vendor": vendor, "secret_hash": "0" * 64,
                "hostname": f"{vendor[:4]}-ws-{n:04d}", "os": "linux", "machine_id": f"{rng.getrandbits(128):032x}",
                "agent_version": rng.choice(("0.1.0", "0.1.0", "0.2.0")), "ruleset_version": "148583d2a3f6984c", "bundle_version": rng.choice((3, 3, 3, 2, None)),
                "ruleset_error": None if rng.random() < 0.98 else "packs/x.yar:3: syntax error", "spool_depth": rng.choice((0, 0, 0, 3, 120)),
                "dropped": rng.choice((0, 0, 0, 0, 17)), "sources": {"files": {"ok": True}}, "status": "online" if now - seen < timedelta(minutes=5) else "offline",
                "enrolled_at": now - timedelta(days=DAYS + 5), "last_seen_at": seen, "last_heartbeat_at": seen, "last_ip": f"10.{n // 250}.{n % 250}.7",
                "user": f"{vendor[:4]}.user{n:04d}",
            })  # fmt: skip
        conn.execute(agents.insert(), [{k: v for k, v in a.items() if k not in ("vendor", "user")} for a in rows])
        conn.execute(agent_addresses.insert(), [
            {"agent_id": a["id"], "address": address, "country": country, "expected": expected, "first_seen_at": now - timedelta(days=DAYS),
             "last_seen_at": a["last_seen_at"], "count": 500}
            for a in rows for address, country, expected in ((a["last_ip"], None, True),) + ((("203.0.113.9", "RU", False),) if rng.random() < 0.03 else ())
        ])  # fmt: skip
    return rows


def _moments(rng: random.Random, count: int, now: datetime) -> list[float]:
    """``count`` moments (POSIX seconds, sorted) in the last DAYS days, weekdays and office hours far more likely."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=n) for n in range(DAYS)]
    day_weights = [0.2 if day.weekday() >= 5 else 1.0 for day in days]
    hours = (8, 9, 9, 10, 10, 11, 11, 12, 13, 14, 14, 15, 15, 16, 16, 17, 18, 21)
    starts = [day.timestamp() for day in rng.choices(days, weights=day_weights, k=count)]
    latest = now.timestamp()
    moments = [min(latest, start + 3600 * rng.choice(hours) + rng.randrange(3_600_000) / 1000) for start in starts]
    moments.sort()
    return moments


def _records(rng: random.Random, agent_rows: list[dict[str, Any]], chosen: list[int], moments: list[float]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(agent record as sent, its agent row) for each of ``moments`` on the agents at indexes ``chosen``."""
    hashes = [f"{n:064x}" for n in range(1, 60_001)]
    serials = [f"SN{n:06d}" for n in range(400)]
    rule_cumulative = list(itertools.accumulate(1 / (n + 1) for n in range(len(RULES))))
    kind_of = _chooser(rng, KINDS)
    severity_of = _chooser(rng, SEVERITIES)
    for moment, index in zip(moments, chosen):
        agent = agent_rows[index]
        occurred = datetime.fromtimestamp(moment, UTC)
        channel, kind = kind_of()
        severity = None if channel == "agent" or kind == "usb.mount" else severity_of()
        rules = sorted(set(rng.choices(RULES, cum_weights=rule_cumulative, k=rng.choice((1, 1, 1, 2, 3))))) if severity else []
        user = agent["user"] if rng.random() < 0.93 else rng.choice(agent_rows)["user"]
        # Some files travel a lot (a Pareto tail of shared hashes), most are seen once or twice.
        sha = hashes[min(int(rng.paretovariate(1.2)) - 1, len(hashes) - 1) if rng.random() < 0.3 else rng.randrange(len(hashes))]
        name = f"{rng.getrandbits(40):010x}"
        record: dict[str, Any] = {
            "schema": 1, "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "type": kind, "channel": channel,
            "occurred_at": occurred.isoformat().replace("+00:00", "Z"), "host": agent["hostname"], "user": user,
        }  # fmt: skip
        if channel == "agent":
            record["dropped"] = rng.randrange(1, 50)
        elif kind == "usb.mount":
            record["device"] = {"serial": rng.choice(serials), "vendor": "SanDisk", "model": "Ultra", "fstype": "exfat", "mountpoint": "/media/stick"}
        else:
            record.update(size=rng.randrange(100, 5_000_000), sha256=sha, status="match", severity=severity)
            record["matches"] = [
                {"rule": r, "namespace": r.split(".")[0], "severity": severity, "category": "source_code", "tags": [], "member": None, "offsets": [rng.randrange(9000)]} for r in rules
            ]
            if channel == "usb":
                record["device"] = {"serial": rng.choice(serials), "vendor": "SanDisk", "model": "Ultra", "fstype": "exfat", "mountpoint": "/media/stick"}
                record["path"] = f"/media/stick/{rng.choice(('backup', 'export', 'src', 'docs'))}/{name}.zip"
            elif channel == "clipboard":
                record["process"] = {"pid": rng.randrange(1000, 60000), "exe": rng.choice(("/usr/bin/xclip", "/usr/bin/code", "/usr/lib/firefox/firefox")), "user": user, "ppid": 1}
            elif channel == "egress":
                record["destination"] = {"host": rng.choice(("github.com", "gitlab.com", "git.customer.example", "bitbucket.org")), "transport": "https"}
                record["path"] = f"/home/{user}/src/{rng.choice(('ledger', 'billing', 'portal'))}"
            else:
                record["path"] = f"/home/{user}/Documents/{name}.docx"
        yield record, agent


_EVENTS_IN = TypeAdapter(list[EventIn])


_WORKER: dict[str, Any] = {}


def _start_worker(agent_rows: list[dict[str, Any]]) -> None:
    _WORKER["agents"] = agent_rows


def _prepared(job: tuple[int, list[int], list[float]]) -> list[tuple[str, dict[str, Any], str, datetime]]:
    """One chunk's records as ingest takes them: (agent id, columns, body as the API stores it, occurred_at).

    Runs in a worker process: building and validating records costs more than storing them."""
    number, chosen, moments = job
    records = list(_records(random.Random(1_000_003 * number), _WORKER["agents"], chosen, moments))
    validated = _EVENTS_IN.validate_python([record for record, _ in records])
    return [(agent["id"], event.columns(), event.model_dump_json(by_alias=True), event.occurred_at) for event, (_, agent) in zip(validated, records)]


def load_events(db: Database, rng: random.Random, agent_rows: list[dict[str, Any]], count: int, now: datetime) -> None:
    """``count`` agent events through the collector's ingest, plus a few of the collector's own ``access`` events.

    Two worker processes build and validate the chunks while this one stores them in order."""
    identities = {a["id"]: AgentIdentity(a["id"], a["vendor_id"], a["vendor"], a["hostname"], ("10.0.0.0/8",), a["status"]) for a in agent_rows}
    indexes = [*events.indexes, *event_rules.indexes]
    with db.write() as conn:
        for index in indexes:
            index.drop(conn)
    weights = [VENDORS[a["vendor"]] / sum(1 for b in agent_rows if b["vendor"] == a["vendor"]) for a in agent_rows]
    chosen = rng.choices(range(len(agent_rows)), weights=weights, k=count)
    moments = _moments(rng, count, now)
    jobs = ((n, chosen[first : first + CHUNK], moments[first : first + CHUNK]) for n, first in enumerate(range(0, count, CHUNK)))
    started, stored = time.monotonic(), 0
    with multiprocessing.get_context("fork").Pool(2, initializer=_start_worker, initargs=(agent_rows,)) as pool:
        for chunk in pool.imap(_prepared, jobs):
            by_agent: dict[str, list[tuple[str, dict[str, Any], str, datetime]]] = defaultdict(list)
            for item in chunk:
                by_agent[item[0]].append(item)
            with db.write() as conn:
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
                for agent_id, batch in by_agent.items():
                    newest = max(occurred for *_, occurred in batch)
                    event_ingest.ingest(
                        conn, agent=identities[agent_id], records=[columns for _, columns, _, _ in batch], bodies=[body for _, _, body, _ in batch],
                        occurred=[occurred for *_, occurred in batch], address=f"10.0.{len(agent_id) % 250}.7", country=None,
                        now=newest + timedelta(milliseconds=rng.randrange(50, 4000)),
                    )  # fmt: skip
            stored += len(chunk)
            print(f"\r  {stored:,} events ({stored / (time.monotonic() - started):,.0f}/s)", end="", file=sys.stderr, flush=True)
    triage = _chooser(rng, TRIAGE)
    with db.write() as conn:
        _access_events(conn, rng, max(5, count // 5000), now)
        # Reviewed events: older ones mostly triaged (the list's status filter has something to find).
        reviewed: dict[str, list[int]] = defaultdict(list)
        for seq in range(1, int(stored * 0.95)):
            reviewed[triage()].append(seq)
        for status, seqs in reviewed.items():
            for part in range(0, len(seqs) if status != "new" else 0, 5000):
                conn.execute(events.update().where(events.c.seq.in_(seqs[part : part + 5000])).values(triage_status=status))
    print(f"\r  {stored:,} events stored in {time.monotonic() - started:.0f} s; indexing", end="", file=sys.stderr, flush=True)
    with db.write() as conn:
        for index in indexes:
            index.create(conn)
    print(f"\r  {stored:,} events stored and indexed in {time.monotonic() - started:.0f} s", file=sys.stderr)


def _access_events(conn: Any, rng: random.Random, count: int, now: datetime) -> None:
    """The collector's own unusual-login events: no agent, no vendor (only unscoped accounts see them)."""
    rows = []
    for n in range(count):
        at = now - timedelta(days=rng.randrange(DAYS), minutes=rng.randrange(1440))
        record = {"schema": 1, "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "type": "access.unusual_login", "channel": "access",
                  "occurred_at": at.isoformat().replace("+00:00", "Z"), "severity": "medium", "matches": [], "account": f"reviewer{n % 7}",
                  "address": f"198.51.100.{n % 250}", "country": "BR"}  # fmt: skip
        rows.append({
            "id": record["id"], "agent_id": None, "vendor_id": None, "channel": "access", "type": record["type"], "occurred_at": at, "received_at": at,
            "severity": "medium", "severity_rank": SEVERITY_RANK["medium"], "status": None, "host": None, "user_name": None, "body": json.dumps(record, separators=(",", ":")),
            "source_ip": record["address"], "source_country": "BR", "triage_status": "new", "origin": "collector",
        })  # fmt: skip
    conn.execute(events.insert(), rows)


def fold(db: Database) -> None:
    """Every event into the overview's daily counts (and whatever else the stats duty folds)."""
    later = datetime.now(UTC) + stats.FOLD_LAG
    while True:
        with db.write() as conn:
            if not stats.fold(conn, now=later, chunk=100_000):
                return


def analyze(db: Database) -> None:
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def load_cases(db: Database, rng: random.Random, count: int, now: datetime, *, reviewer_names: list[str], lead_vendor: str, lead_vendor_id: int) -> None:
    """``count`` cases of 1 to 15 events of one user (3% also hold another vendor's event), comments
    (a fifth internal), their history in the audit log, watchlist entries, saved views and reveals."""
    with db.write() as conn:
        user_ids = dict(conn.execute(select(users.c.name, users.c.id)).all())
        reviewers = [user_ids[name] for name in reviewer_names]
        newest = conn.execute(select(func.max(events.c.seq))).scalar_one()
        anchors = sorted(rng.randrange(1, newest + 1) for _ in range(count))
        anchor_rows = []
        for part in range(0, len(anchors), 5000):
            wanted = anchors[part : part + 5000]
            found = conn.execute(select(events.c.seq, events.c.user_name, events.c.vendor_id).where(events.c.seq.in_(wanted), events.c.vendor_id.is_not(None))).all()
            anchor_rows.extend(found)
        by_vendor: dict[int, list[int]] = defaultdict(list)
        for row in anchor_rows:
            by_vendor[row.vendor_id].append(row.seq)
        status_of = _chooser(rng, CASE_STATUS)
        case_rows, member_rows, comment_rows, history = [], [], [], []
        for case_id, anchor in enumerate(anchor_rows[:count], start=1):
            size = rng.choice((1, 2, 3, 3, 4, 5, 6, 8, 10, 15))
            members = conn.execute(
                select(events.c.seq, events.c.severity_rank, events.c.id).where(events.c.user_name == anchor.user_name, events.c.seq >= anchor.seq).order_by(events.c.seq).limit(size)
            ).all()
            if rng.random() < 0.03:
                other = rng.choice([v for v in by_vendor if v != anchor.vendor_id] or [anchor.vendor_id])
                extra = rng.choice(by_vendor[other])
                members = [*members, conn.execute(select(events.c.seq, events.c.severity_rank, events.c.id).where(events.c.seq == extra)).one()]
            members = list({seq: (seq, rank, event_id) for seq, rank, event_id in members}.values())
            created = now - timedelta(days=rng.randrange(DAYS), minutes=rng.randrange(1440))
            status = status_of()
            case_rows.append({
                "id": case_id, "title": f"{anchor.user_name}: {rng.choice(('copies to USB', 'source pushed outside', 'credentials on clipboard', 'contract documents'))} #{case_id}",
                "status": status, "outcome": rng.choice(OUTCOMES) if status == "closed" else None, "assignee_id": rng.choice([*reviewers, None]),
                "severity": None, "severity_rank": max(rank for _, rank, _ in members), "due_at": created + timedelta(days=rng.randrange(3, 45)),
                "event_count": len(members), "created_by": "admin", "created_at": created, "updated_at": created + timedelta(hours=rng.randrange(200)),
                "closed_at": created + timedelta(days=2) if status == "closed" else None,
            })  # fmt: skip
            member_rows.extend({"case_id": case_id, "event_seq": seq, "added_by": "admin", "added_at": created} for seq, _, _ in members)
            for n in range(rng.choice((0, 1, 2, 2, 3, 5))):
                comment_rows.append({"case_id": case_id, "user_id": rng.choice(reviewers), "body": f"Looked at the events of {anchor.user_name} ({n + 1}).",
                                     "internal": rng.random() < 0.2, "created_at": created + timedelta(hours=n + 1)})  # fmt: skip
            history.append((case_id, created, [event_id for *_, event_id in members]))
        conn.execute(cases.insert(), case_rows)
        for part in range(0, len(member_rows), 20_000):
            conn.execute(case_events.insert(), member_rows[part : part + 20_000])
        comment_ids = conn.execute(case_comments.insert().returning(case_comments.c.id, sort_by_parameter_order=True), comment_rows).scalars().all()
        # The history as server/store/cases.py writes it: creation, comments (by length), closing.
        entries = [(created, case_id, "case.create", {"title": case_rows[case_id - 1]["title"], "events": ids, "assignee": None, "severity": None, "due_at": None})
                   for case_id, created, ids in history]  # fmt: skip
        entries.extend((c["created_at"], c["case_id"], "case.comment", {"comment": i, "internal": c["internal"], "length": len(c["body"])}) for c, i in zip(comment_rows, comment_ids))
        entries.extend((row["closed_at"], row["id"], "case.update", {"before": {"outcome": None, "status": "open"}, "after": {"outcome": row["outcome"], "status": "closed"}})
                       for row in case_rows if row["status"] == "closed")  # fmt: skip
        for at, case_id, action, details in sorted(entries, key=lambda entry: (entry[0], entry[1])):
            audit.append(conn, actor="admin", action=action, target=f"case:{case_id}", details=details, now=at)
        people = sorted({row.user_name for row in anchor_rows if row.user_name})
        vendor_of = {row.user_name: row.vendor_id for row in anchor_rows}
        conn.execute(watchlist.insert(), [
            {"user_name": name, "vendor_id": vendor_of[name] if rng.random() < 0.8 else None, "reason": "contract ends this month", "added_by": "admin",
             "added_at": now - timedelta(days=rng.randrange(30)), "expires_at": now + timedelta(days=rng.randrange(1, 60))}
            for name in rng.sample(people, min(len(people), 60))
        ])  # fmt: skip
        conn.execute(saved_views.insert(), [
            {"owner_id": user_ids["admin"] if "admin" in user_ids else reviewers[0], "name": f"view {n}", "query": f"severity=high,critical&vendor={name}",
             "shared": n % 2 == 0, "created_at": now}
            for n, name in enumerate(VENDORS)
        ])  # fmt: skip
        lead_cases = [row for row in case_rows if row["title"].startswith(lead_vendor[:4])][:5]
        conn.execute(reveals.insert(), [
            {"vendor_id": lead_vendor_id, "user_name": row["title"].split(":")[0], "case_id": row["id"], "revealed_by": "admin", "revealed_at": now}
            for row in {r["title"].split(":")[0]: r for r in lead_cases}.values()
        ])  # fmt: skip
