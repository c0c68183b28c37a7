"""Per-person daily figures folded beside the vendors overview's counts, so people pages read rollups.

``stats.fold`` adds these rows to ``event_counts`` in the same pass and transaction as its own
kinds, keyed by user name (or host): severities, channels, hours of the day and source addresses
per user and day, and events per host and day. The raw figures are kept, not a score, so the
risk weights and working hours (server/store/risk.py) can change without refolding anything.
Events of no vendor (the collector's own ``access`` events) are not people's events and are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from sqlalchemy import Connection, String, cast, func, select

from agent.events import SEVERITY_RANK
from server.db.tables import events

SEVERITY_KIND = "u:sev:"
"""+ severity name: a user's events of that severity on a day."""
CHANNEL_KIND = "u:ch:"
"""+ channel: a user's events on that channel on a day."""
HOUR_KIND = "u:hour:"
"""+ two-digit UTC hour: a user's events that occurred in that hour of a day."""
ADDRESS_KIND = "u:ip"
"""key ``<address> <user name>``: a user's events from that source address on a day."""
HOST_KIND = "host"
"""key host name: a host's events on a day (``user`` and ``device`` are the overview's own kinds)."""
_KEY_LIMIT = 255
_NAME_BY_RANK = {rank: name for name, rank in SEVERITY_RANK.items()}


def address_key(address: str, user_name: str) -> str:
    return f"{address} {user_name}"[:_KEY_LIMIT]


def split_address_key(key: str) -> tuple[str, str]:
    address, _, user_name = key.partition(" ")
    return address, user_name


def _hour(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", events.c.occurred_at), "HH24", type_=String)
    return func.substr(events.c.occurred_at, 12, 2, type_=String)


def counted(conn: Connection, *, after: int, upto: int, day: Any) -> Iterator[tuple[str, int, date, str, int]]:
    """(kind, vendor_id, day, key, count) over the events with ``after < seq <= upto``; ``day`` is
    the stats fold's UTC-day expression (server/store/stats.py), so both fold the same calendar."""
    in_range = [events.c.seq > after, events.c.seq <= upto]
    user = events.c.user_name
    hour = _hour(conn)
    address = events.c.source_ip
    grouped = (
        (SEVERITY_KIND, events.c.severity_rank, user, [user.is_not(None), events.c.severity_rank > 0]),
        (CHANNEL_KIND, events.c.channel, user, [user.is_not(None)]),
        (HOUR_KIND, hour, user, [user.is_not(None)]),
        (ADDRESS_KIND, address, user, [user.is_not(None), address.is_not(None)]),
        (HOST_KIND, None, events.c.host, [events.c.host.is_not(None)]),
    )
    for kind, part, key, conditions in grouped:
        columns = [events.c.vendor_id, day.label("day"), key.label("key")]
        if part is not None:
            columns.append(cast(part, String).label("part") if kind == SEVERITY_KIND else part.label("part"))
        query = select(*columns, func.count().label("n")).where(*in_range, *conditions)
        query = query.group_by(events.c.vendor_id, day, key, *([part] if part is not None else []))
        for row in conn.execute(query):
            if row.vendor_id is None:
                continue  # access events; checked here, not in SQL, so the plan stays the seq range (as stats does)
            when = date.fromisoformat(row.day)
            if kind == SEVERITY_KIND:
                yield kind + _NAME_BY_RANK[int(row.part)], row.vendor_id, when, row.key, row.n
            elif kind == ADDRESS_KIND:
                yield kind, row.vendor_id, when, address_key(row.part, row.key), row.n
            elif part is not None:
                yield kind + row.part, row.vendor_id, when, row.key, row.n
            else:
                yield kind, row.vendor_id, when, row.key, row.n
