"""A per-user risk score over recent days, with how it was computed.

The score (0 to 100) adds five factors, each its weight times how far its figure goes towards the
figure at which it counts fully (``saturation``): severity points (low 1, medium 2, high 4,
critical 8), USB and egress events (the channels data leaves by), volume, source addresses not
seen for that user in the ``HISTORY_DAYS`` before the window (only when there is such history),
and events outside working hours (UTC; weekends are off-hours). Figures come from the daily
rollups the stats fold keeps per user (server/store/person_days.py) plus the events not folded
yet, so a score never reads the events themselves. Weights and hours apply at read time: changing
them needs no refold. docs/ui.md shows the formula.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from server.db.tables import event_counts, events
from server.settings import PeopleSection
from server.store import person_days, stats
from server.store.scope import Scope

HISTORY_DAYS = 90
SEVERITY_POINTS = {"low": 1, "medium": 2, "high": 4, "critical": 8}
RISKY_CHANNELS = ("usb", "egress")


@dataclass(frozen=True)
class FactorRule:
    name: str
    label: str
    weight: float
    saturation: float


FACTORS = (
    FactorRule("severity", "Severity points (low 1, medium 2, high 4, critical 8)", 35, 40),
    FactorRule("channel", "USB and egress events", 20, 10),
    FactorRule("volume", "Events", 15, 100),
    FactorRule("unfamiliar_ips", f"Source addresses not seen in the {HISTORY_DAYS} days before", 15, 2),
    FactorRule("off_hours", "Events outside working hours", 15, 10),
)


@dataclass(frozen=True)
class Factor:
    name: str
    label: str
    figure: float
    saturation: float
    weight: float
    contribution: float


@dataclass
class Figures:
    """One user's figures over the window."""

    events: int = 0
    severity: int = 0
    channel: int = 0
    off_hours: int = 0
    addresses: set[str] = field(default_factory=set)
    familiar: set[str] = field(default_factory=set)

    @property
    def unfamiliar(self) -> set[str]:
        return self.addresses - self.familiar if self.familiar else set()


@dataclass
class Risk:
    user: str
    score: float
    events: int
    factors: list[Factor]
    since: date
    unfamiliar_ips: list[str]


def off_hours(day: date, hour: int, config: PeopleSection) -> bool:
    return day.weekday() >= 5 or not config.work_start_hour <= hour < config.work_end_hour


def _add(figures: Figures, kind: str, day: date, key_address: str | None, n: int, config: PeopleSection) -> None:
    if kind.startswith(person_days.CHANNEL_KIND):
        figures.events += n
        if kind[len(person_days.CHANNEL_KIND) :] in RISKY_CHANNELS:
            figures.channel += n
    elif kind.startswith(person_days.SEVERITY_KIND):
        figures.severity += SEVERITY_POINTS.get(kind[len(person_days.SEVERITY_KIND) :], 0) * n
    elif kind.startswith(person_days.HOUR_KIND):
        if off_hours(day, int(kind[len(person_days.HOUR_KIND) :]), config):
            figures.off_hours += n
    elif kind == person_days.ADDRESS_KIND and key_address:
        figures.addresses.add(key_address)


def figures(conn: Connection, *, scope: Scope, now: datetime, config: PeopleSection, user_name: str | None = None) -> tuple[date, dict[str, Figures]]:
    """The window's first day and each user's figures (only ``user_name``'s when given)."""
    first = stats.window_start(now, config.risk_days)
    last = first + timedelta(days=config.risk_days - 1)
    found: dict[str, Figures] = defaultdict(Figures)
    visible = scope.where(event_counts.c.vendor_id)
    in_scope = [] if visible is None else [visible]
    total = func.sum(event_counts.c.count).label("n")
    query = (
        select(event_counts.c.kind, event_counts.c.day, event_counts.c.key, total)
        .where(event_counts.c.kind.like("u:%"), event_counts.c.day >= first, event_counts.c.day <= last, *in_scope)
        .group_by(event_counts.c.kind, event_counts.c.day, event_counts.c.key)
    )
    if user_name is not None:
        query = query.where((event_counts.c.key == user_name) | (event_counts.c.kind == person_days.ADDRESS_KIND))
    rows: list[tuple[str, date, str, int]] = [(row.kind, row.day, row.key, int(row.n)) for row in conn.execute(query)]
    mark, newest = stats.folded_upto(conn), conn.execute(select(func.max(events.c.seq))).scalar() or 0
    if newest > mark:
        tail = person_days.counted(conn, after=mark, upto=newest, day=stats._day(conn))
        rows.extend((kind, day, key, n) for kind, vendor_id, day, key, n in tail if kind.startswith("u:") and first <= day <= last and scope.allows(vendor_id))
    for kind, day, key, n in rows:
        address = None
        if kind == person_days.ADDRESS_KIND:
            address, key = person_days.split_address_key(key)
        if user_name is None or key == user_name:
            _add(found[key], kind, day, address, n, config)
    if found:
        history = (
            select(event_counts.c.key)
            .where(event_counts.c.kind == person_days.ADDRESS_KIND, event_counts.c.day >= first - timedelta(days=HISTORY_DAYS), event_counts.c.day < first, *in_scope)
            .distinct()
        )
        for key in conn.execute(history).scalars():
            address, name = person_days.split_address_key(key)
            if name in found:
                found[name].familiar.add(address)
    return first, dict(found)


def explain(user: str, found: Figures, since: date) -> Risk:
    values = {"severity": found.severity, "channel": found.channel, "volume": found.events, "unfamiliar_ips": len(found.unfamiliar), "off_hours": found.off_hours}
    factors = [Factor(rule.name, rule.label, values[rule.name], rule.saturation, rule.weight, round(rule.weight * min(1.0, values[rule.name] / rule.saturation), 1)) for rule in FACTORS]
    return Risk(user, round(sum(f.contribution for f in factors), 1), found.events, factors, since, sorted(found.unfamiliar))


def scores(conn: Connection, *, scope: Scope, now: datetime, config: PeopleSection, user_name: str | None = None) -> list[Risk]:
    """Every user's risk (or ``user_name``'s), highest first."""
    since, found = figures(conn, scope=scope, now=now, config=config, user_name=user_name)
    ranked = [explain(name, figures_of, since) for name, figures_of in found.items() if figures_of.events]
    return sorted(ranked, key=lambda risk: (-risk.score, risk.user))


def as_dict(risk: Risk) -> dict[str, Any]:
    return {
        "user": risk.user,
        "score": risk.score,
        "events": risk.events,
        "since": risk.since.isoformat(),
        "unfamiliar_ips": risk.unfamiliar_ips,
        "factors": [vars(factor) for factor in risk.factors],
    }
