"""Denied networks: CIDR ranges refused for agent calls and logins, collector-wide or per vendor.

Every agent call checks its address, so matching happens in memory: each process keeps the list
as hash tables of network prefixes (one per prefix length in use), which costs a lookup per
length rather than a comparison per range, and reloads it from the database every
``REFRESH_S`` seconds, so every collector over one database applies an admin's change within
that time (at once in the process that made it). Refused calls are counted in ``denied_calls``,
one row per (kind, address), so a refused agent retrying every minute costs a counter, not rows.

Measured on this 2-core machine while it was loaded (load average 13-19): a check costs 5-7 us
with 1, 1,000 or 100,000 ranges (mostly parsing the address), 0.3 us with none, against about
3 ms for a whole heartbeat in process, so under 0.3%. bench/heartbeat.py, 1,000 agents at 100/s on
SQLite: 3.7 ms of server CPU a heartbeat without ranges, 3.8 ms with 1,000 (ratio 1.03, within
the run-to-run noise of that machine; latency p50 17.9 and 12.1 ms, p99 397 and 513 ms, noise too). Rereading a changed list of 1,000 ranges costs about 17 ms, once per
process per change.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from server.db.tables import denied_calls, denied_networks, vendors
from server.errors import Forbidden, InvalidInput, NotFound
from server.netaddr import Network
from server.store import audit
from server.store.sql import iso

KINDS = ("agent", "enroll", "login", "api", "ui")
"""What a refusal refused: an agent's call, an enrollment, a login, a user's API call, a UI page of an open session."""
REFRESH_S = 5.0
COLLECTOR_WIDE: None = None
"""The vendor of a collector-wide range."""


class DeniedNetwork(Forbidden):
    """The caller's address is in a denied range; the HTTP layer records it and answers 403."""

    def __init__(self, *, kind: str, address: str, vendor_id: int | None) -> None:
        super().__init__("calls from this network are refused")
        self.kind = kind
        self.address = address
        self.vendor_id = vendor_id
        self.recorded = False
        """True once the refusal is in ``denied_calls`` (logins record their own, beside the attempt)."""


def parse_cidr(value: str) -> Network:
    """A range as given by an admin; host bits must be zero, so a typo is not widened silently."""
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise InvalidInput(f"not a CIDR range (host bits must be zero): {value[:64]!r}") from exc


def add(conn: Connection, *, cidr: str, vendor: str | None, note: str, actor: str, address: str | None, now: datetime) -> dict[str, Any]:
    """Deny ``cidr`` for every caller (``vendor`` None) or for one vendor's agents and accounts; audited."""
    network = parse_cidr(cidr)
    vendor_id = None
    if vendor is not None:
        vendor_id = conn.execute(select(vendors.c.id).where(vendors.c.name == vendor)).scalar_one_or_none()
        if vendor_id is None:
            raise NotFound(f"no vendor {vendor!r}")
    key = conn.execute(
        denied_networks.insert().values(cidr=str(network), vendor_id=vendor_id, note=note, created_by=actor, created_at=now)
    ).inserted_primary_key
    assert key is not None, "an INSERT of one row has its key"
    details = {"cidr": str(network), "vendor": vendor, "note": note}
    audit.append(conn, actor=actor, action="denylist.add", target=f"denylist:{key[0]}", details=details, address=address, now=now)
    return {"id": key[0], **details, "created_by": actor, "created_at": iso(now)}


def remove(conn: Connection, *, entry_id: int, actor: str, address: str | None, now: datetime) -> None:
    """Lift one range; audited with what it was."""
    row = conn.execute(
        select(denied_networks.c.cidr, vendors.c.name).outerjoin(vendors, vendors.c.id == denied_networks.c.vendor_id).where(denied_networks.c.id == entry_id)
    ).first()
    if row is None:
        raise NotFound(f"no denied network {entry_id}")
    conn.execute(denied_networks.delete().where(denied_networks.c.id == entry_id))
    details = {"cidr": row.cidr, "vendor": row.name}
    audit.append(conn, actor=actor, action="denylist.remove", target=f"denylist:{entry_id}", details=details, address=address, now=now)


def list_all(conn: Connection) -> list[dict[str, Any]]:
    """Every range, collector-wide first, then by vendor and range."""
    rows = conn.execute(
        select(denied_networks, vendors.c.name.label("vendor"))
        .outerjoin(vendors, vendors.c.id == denied_networks.c.vendor_id)
        .order_by(denied_networks.c.vendor_id.is_not(None), vendors.c.name, denied_networks.c.id)
    )
    return [
        {"id": r.id, "cidr": r.cidr, "vendor": r.vendor, "note": r.note, "created_by": r.created_by, "created_at": iso(r.created_at)}
        for r in rows
    ]


def record_refusal(conn: Connection, *, kind: str, address: str, vendor_id: int | None, now: datetime) -> None:
    """Count one refused call; the first from an address of a kind makes its row."""
    counted = conn.execute(
        update(denied_calls)
        .where(denied_calls.c.kind == kind, denied_calls.c.address == address)
        .values(count=denied_calls.c.count + 1, last_seen_at=now, vendor_id=vendor_id)
    ).rowcount
    if not counted:
        conn.execute(denied_calls.insert().values(kind=kind, address=address, vendor_id=vendor_id, first_seen_at=now, last_seen_at=now, count=1))


def refusals(conn: Connection, *, limit: int = 100) -> list[dict[str, Any]]:
    """The latest refused (kind, address) pairs with their counts."""
    rows = conn.execute(
        select(denied_calls, vendors.c.name.label("vendor"))
        .outerjoin(vendors, vendors.c.id == denied_calls.c.vendor_id)
        .order_by(denied_calls.c.last_seen_at.desc())
        .limit(limit)
    )
    return [
        {"kind": r.kind, "address": r.address, "vendor": r.vendor, "count": r.count, "first_seen_at": iso(r.first_seen_at), "last_seen_at": iso(r.last_seen_at)}
        for r in rows
    ]


def refused_total(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.sum(denied_calls.c.count), 0))).scalar_one())


_Table = dict[tuple[int, int], dict[int, frozenset[int | None]]]
"""(IP version, prefix length) -> network address as an integer -> the lists holding it."""


class Matcher:
    """The denied ranges of one process, in memory, reloaded when older than ``refresh_s``."""

    def __init__(self, *, refresh_s: float = REFRESH_S, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._table: _Table = {}
        self._loaded_at: float | None = None
        self._stamp: tuple[Any, ...] | None = None
        """What the list looked like when read (count, newest, sum of ids): reread only when it changed."""
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Reload at the next check (this process changed the list)."""
        self._loaded_at = None
        self._stamp = None

    def due(self, within: float = 0.0) -> bool:
        """Whether the next check with a connection rereads the list (one without checks what is
        loaded), or will within ``within`` seconds."""
        loaded_at = self._loaded_at
        return loaded_at is None or self._monotonic() + within - loaded_at >= self._refresh_s

    def lists_holding(self, conn: Connection | None, address: str | None) -> frozenset[int | None]:
        """The lists whose ranges hold ``address``: vendor ids, and None for the collector-wide list.

        ``conn`` None: as loaded, without rereading (a heartbeat answered from memory, server/liveness.py,
        which rereads when ``due``)."""
        if conn is not None and self.due():
            self._reload(conn)
        if not address:
            return frozenset()
        table = self._table
        if not table:
            return frozenset()
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return frozenset()
        value, version, bits = int(parsed), parsed.version, parsed.max_prefixlen
        found: frozenset[int | None] = frozenset()
        for (table_version, length), networks in table.items():
            if table_version == version:
                held = networks.get(value >> (bits - length) << (bits - length))
                if held:
                    found = found | held
        return found

    def check(self, conn: Connection | None, *, kind: str, address: str | None, vendor_ids: Iterable[int] | None = None) -> None:
        """Raise DeniedNetwork when ``address`` is in the collector-wide list or in the list of one of ``vendor_ids``.

        ``vendor_ids`` are the lists that apply beside the collector's: the agent's vendor, or a
        scoped account's vendors (None: only the collector-wide list applies).
        """
        held = self.lists_holding(conn, address)
        if not held or address is None:
            return
        if COLLECTOR_WIDE in held:
            raise DeniedNetwork(kind=kind, address=address, vendor_id=None)
        for vendor_id in vendor_ids or ():
            if vendor_id in held:
                raise DeniedNetwork(kind=kind, address=address, vendor_id=vendor_id)

    def reload(self, conn: Connection) -> None:
        """Reread the list now (when it changed) rather than at the next check that finds it due."""
        self._reload(conn)

    def _reload(self, conn: Connection) -> None:
        # The check runs inside agents' write transactions: an unchanged list costs one aggregate
        # row, and only a changed one is read and rebuilt (milliseconds for a thousand ranges).
        stamp = tuple(
            conn.execute(select(func.count(), func.max(denied_networks.c.created_at), func.coalesce(func.sum(denied_networks.c.id), 0))).one()
        )
        if stamp == self._stamp:
            self._loaded_at = self._monotonic()
            return
        rows = conn.execute(select(denied_networks.c.cidr, denied_networks.c.vendor_id)).all()
        self.replace(rows)
        self._stamp = stamp

    def replace(self, entries: Iterable[tuple[str, int | None]]) -> None:
        """Use ``entries`` (range, vendor id) as the list, from now until the next reload."""
        building: dict[tuple[int, int], dict[int, set[int | None]]] = {}
        for cidr, vendor_id in entries:
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                continue
            slot = building.setdefault((network.version, network.prefixlen), {})
            slot.setdefault(int(network.network_address), set()).add(vendor_id)
        table = {key: {net: frozenset(held) for net, held in nets.items()} for key, nets in building.items()}
        with self._lock:
            self._table = table
            self._loaded_at = self._monotonic()
