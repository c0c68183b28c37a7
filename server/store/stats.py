"""Figures for the vendors overview: events per day by severity, top rules, users and devices.

Aggregating a month of events per view would cost seconds at a million events, so events are
folded into daily counts per vendor (``event_counts``) in arrival order: ``fold`` adds the
events after the last folded ``seq`` and moves the mark, in the same transaction. Events are
only ever added, never removed or re-dated, so the counts stay exact. A view reads the counts
of its window plus the events not yet folded (a seq range on the primary key: minutes of
events). Only events that arrived ``FOLD_LAG`` ago are folded, so an ingest transaction still
open on another collector (PostgreSQL assigns its seq before it commits) cannot be passed by.
Reads take the viewer's ``Scope``: a scoped reviewer or vendor lead gets only their vendors'
figures (filtered in SQL), so every total is the total of what they may see, and a vendor lead
sees their top users under pseudonyms (server/pseudonyms.py), never by name.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, func, select

from agent.events import SEVERITY_RANK
from server.db.tables import event_counts, event_rules, events, stats_progress, vendors
from server.pseudonyms import Names, Pseudonyms
from server.store import person_days, reveals
from server.store import vendors as vendor_store
from server.store.scope import Scope
from server.store.sql import insert

SEVERITY_BY_RANK = {0: "none", **{rank: name for name, rank in SEVERITY_RANK.items()}}
KINDS = ("severity", "rule", "user", "device")
MAX_WINDOW_DAYS = 90
FOLD_LAG = timedelta(minutes=5)
FOLD_CHUNK = 10_000


@dataclass
class VendorStats:
    name: str
    agents: int
    agents_online: int
    days: list[date]
    per_day: dict[date, dict[str, int]] = field(default_factory=dict)
    """Events per day and severity name ("none" for events without one)."""
    total: int = 0
    top_rules: list[tuple[str, int]] = field(default_factory=list)
    top_users: list[tuple[str, int]] = field(default_factory=list)
    top_devices: list[tuple[str, int]] = field(default_factory=list)


def _day(conn: Connection) -> Any:
    """``occurred_at`` as a UTC calendar day, as text (YYYY-MM-DD)."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", events.c.occurred_at), "YYYY-MM-DD", type_=String)
    # SQLite keeps UTC datetimes as ISO text ("2026-11-24 09:00:00.000000").
    return func.substr(events.c.occurred_at, 1, 10, type_=String)


def _counted(conn: Connection, *, after: int, upto: int, scope: Scope | None = None) -> Iterator[tuple[str, int, date, str, int]]:
    """(kind, vendor_id, day, key, count) over the events with ``after < seq <= upto`` (of the
    vendors ``scope`` may see, when given; the fold counts every vendor's).

    Bounded by seq on both sides: with only ``seq > after`` SQLite's planner reckons on a large
    part of the table and scans ``ix_events_vendor_id_seq`` whole to save the GROUP BY a sort.
    """
    day = _day(conn)
    in_range = [events.c.seq > after, events.c.seq <= upto]
    visible = None if scope is None else scope.where(events.c.vendor_id)
    if visible is not None:
        in_range.append(visible)
    keys = {"severity": events.c.severity_rank, "user": events.c.user_name, "device": events.c.device_serial, "rule": event_rules.c.rule}
    for kind, key in keys.items():
        query = select(events.c.vendor_id, day.label("day"), key.label("key"), func.count().label("n")).where(*in_range)
        if kind == "rule":
            query = query.join(event_rules, event_rules.c.event_seq == events.c.seq)
        elif kind != "severity":
            query = query.where(key.is_not(None))
        for row in conn.execute(query.group_by(events.c.vendor_id, day, key)):
            if row.vendor_id is None:
                continue  # the collector's own access events: no vendor's figures (checked here, not in SQL, to keep the plan)
            name = SEVERITY_BY_RANK.get(row.key, "none") if kind == "severity" else row.key
            yield kind, row.vendor_id, date.fromisoformat(row.day), name, row.n


COUNTS_PROGRESS = 1
"""``stats_progress`` row of the vendors overview's kinds (severity, rule, user, device)."""
PEOPLE_PROGRESS = 2
"""``stats_progress`` row of the per-person kinds (server/store/person_days.py). A cursor of their
own: a collector upgraded with events already folded starts these at the first event and catches
up a chunk per fold, so people pages cover the events stored before the upgrade too."""


def folded_upto(conn: Connection, progress: int = COUNTS_PROGRESS) -> int:
    return conn.execute(select(stats_progress.c.seq).where(stats_progress.c.id == progress)).scalar() or 0


CountRows = Callable[[Connection, int, int], Iterable[tuple[str, int, date, str, int]]]


def fold(conn: Connection, *, now: datetime, chunk: int = FOLD_CHUNK) -> int:
    """Fold up to ``chunk`` more events into the daily counts; returns how many seqs it covered.

    Each family of kinds advances its own cursor (a fresh collector's move together); the
    larger step is returned, so a caller that folds until 0 also brings the lagging one up.
    """
    counts = _advance(conn, COUNTS_PROGRESS, now=now, chunk=chunk, counted=lambda c, after, upto: _counted(c, after=after, upto=upto))
    people = _advance(
        conn, PEOPLE_PROGRESS, now=now, chunk=chunk, counted=lambda c, after, upto: person_days.counted(c, after=after, upto=upto, day=_day(c))
    )
    return max(counts, people)


def _advance(conn: Connection, progress: int, *, now: datetime, chunk: int, counted: CountRows) -> int:
    conn.execute(insert(conn, stats_progress).values(id=progress, seq=0).on_conflict_do_nothing(index_elements=[stats_progress.c.id]))
    # Updating the mark first takes its row lock, so concurrent folds take turns (as audit.append does).
    mark = conn.execute(
        stats_progress.update().where(stats_progress.c.id == progress).values(seq=stats_progress.c.seq).returning(stats_progress.c.seq)
    ).scalar_one()
    # seq has gaps (PostgreSQL spends a number on every duplicate a retried batch sends), so the
    # chunk starts at the next event that exists rather than at mark + 1.
    first = conn.execute(select(func.min(events.c.seq)).where(events.c.seq > mark)).scalar()
    if first is None:
        return 0
    in_chunk = [events.c.seq >= first, events.c.seq < first + chunk]
    too_recent = conn.execute(select(func.min(events.c.seq)).where(*in_chunk, events.c.received_at >= now - FOLD_LAG)).scalar()
    upto = too_recent - 1 if too_recent is not None else conn.execute(select(func.max(events.c.seq)).where(*in_chunk)).scalar_one()
    if upto < first:
        return 0
    rows = [{"kind": kind, "vendor_id": vendor_id, "day": day, "key": key, "count": n} for kind, vendor_id, day, key, n in counted(conn, mark, upto)]
    if rows:
        stmt = insert(conn, event_counts)
        key_columns = [event_counts.c.kind, event_counts.c.day, event_counts.c.vendor_id, event_counts.c.key]
        conn.execute(stmt.on_conflict_do_update(index_elements=key_columns, set_={"count": event_counts.c.count + stmt.excluded["count"]}), rows)
    conn.execute(stats_progress.update().where(stats_progress.c.id == progress).values(seq=upto))
    return upto - mark


def window_start(now: datetime, days: int) -> date:
    """The oldest of ``days`` calendar days (UTC) ending today."""
    return now.astimezone(UTC).date() - timedelta(days=days - 1)


def vendor_overview(
    conn: Connection, *, now: datetime, scope: Scope, days: int = 30, top: int = 5, pseudonyms: Pseudonyms | None = None
) -> list[VendorStats]:
    """The figures of every vendor ``scope`` may see over the last ``days`` calendar days (UTC), today included.

    When ``scope`` pseudonymizes, top users are shown as ``pseudonyms`` gives them (names a
    customer reviewer revealed by name); without ``pseudonyms`` they are left out.
    """
    days = max(1, min(days, MAX_WINDOW_DAYS))
    first = window_start(now, days)
    calendar = [first + timedelta(days=n) for n in range(days)]
    ids = dict(conn.execute(select(vendors.c.name, vendors.c.id)).all())
    by_id = {ids[v["name"]]: VendorStats(v["name"], v["agents"], v["agents_online"], calendar) for v in vendor_store.list_visible(conn, scope=scope)}
    visible = scope.where(event_counts.c.vendor_id)
    in_scope = [] if visible is None else [visible]
    tallies: dict[str, dict[int, Counter[str]]] = {kind: defaultdict(Counter) for kind in KINDS}
    last = calendar[-1]

    def add(kind: str, vendor_id: int, day: date, key: str, n: int) -> None:
        stats = by_id.get(vendor_id)
        if stats is None or not first <= day <= last:
            return  # outside the window, e.g. from an agent whose clock runs ahead
        if kind == "severity":
            counts = stats.per_day.setdefault(day, {})
            counts[key] = counts.get(key, 0) + n
            stats.total += n
        else:
            tallies[kind][vendor_id][key] += n

    for row in conn.execute(
        select(event_counts.c.vendor_id, event_counts.c.day, event_counts.c.key, event_counts.c.count.label("n")).where(
            event_counts.c.kind == "severity", event_counts.c.day >= first, event_counts.c.day <= last, *in_scope
        )
    ):
        add("severity", row.vendor_id, row.day, row.key, row.n)
    for kind in KINDS[1:]:
        total = func.sum(event_counts.c.count)
        for summed in conn.execute(
            select(event_counts.c.vendor_id, event_counts.c.key, total.label("n"))
            .where(event_counts.c.kind == kind, event_counts.c.day >= first, event_counts.c.day <= last, *in_scope)
            .group_by(event_counts.c.vendor_id, event_counts.c.key)
        ):
            add(kind, summed.vendor_id, last, summed.key, int(summed.n))
    mark, newest = folded_upto(conn), conn.execute(select(func.max(events.c.seq))).scalar() or 0
    if newest > mark:
        for kind, vendor_id, day, key, n in _counted(conn, after=mark, upto=newest, scope=scope):
            add(kind, vendor_id, day, key, n)
    if scope.pseudonymize:
        _pseudonymize(conn, tallies["user"], pseudonyms)
    for kind, attribute in (("rule", "top_rules"), ("user", "top_users"), ("device", "top_devices")):
        for vendor_id, tally in tallies[kind].items():
            setattr(by_id[vendor_id], attribute, sorted(tally.items(), key=lambda item: (-item[1], item[0]))[:top])
    return sorted(by_id.values(), key=lambda s: s.name)


def _pseudonymize(conn: Connection, users: dict[int, Counter[str]], pseudonyms: Pseudonyms | None) -> None:
    """Replace each vendor's user tally by one keyed by the names a vendor lead may see."""
    for vendor_id in list(users):
        if pseudonyms is None:
            del users[vendor_id]
            continue
        names = Names(pseudonyms, {vendor_id: frozenset(reveals.revealed(conn, vendor_id))})
        shown: Counter[str] = Counter()
        for name, n in users[vendor_id].items():
            shown[names.show(vendor_id, name)] += n
        users[vendor_id] = shown
