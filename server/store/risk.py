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

from sqlalchemy import Connection, func, or_, select

from agent.events import CHANNELS, SEVERITIES, SEVERITY_RANK
from server.db.tables import event_counts, events
from server.settings import PeopleSection
from server.store import person_days, stats
from server.store.scope import Scope

HISTORY_DAYS = 90
SEVERITY_POINTS: dict[str, int] = {name: 2 ** (SEVERITY_RANK[name] - 1) for name in SEVERITIES}  # low 1, medium 2, high 4, critical 8
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


_COUNTED_KINDS = [person_days.SEVERITY_KIND + name for name in SEVERITY_POINTS] + [person_days.CHANNEL_KIND + channel for channel in CHANNELS]
_HOUR_KINDS = [f"{person_days.HOUR_KIND}{hour:02d}" for hour in range(24)]


def _count(figures: Figures, kind: str, n: int) -> None:
    if kind.startswith(person_days.CHANNEL_KIND):
        figures.events += n
        if kind[len(person_days.CHANNEL_KIND) :] in RISKY_CHANNELS:
            figures.channel += n
    elif kind.startswith(person_days.SEVERITY_KIND):
        figures.severity += SEVERITY_POINTS.get(kind[len(person_days.SEVERITY_KIND) :], 0) * n


def figures(conn: Connection, *, scope: Scope, now: datetime, config: PeopleSection, user_name: str | None = None) -> tuple[date, dict[str, Figures]]:
    """The window's first day and each user's figures (only ``user_name``'s when given).

    The rollups are summed in SQL per user (kinds listed, so each is a range of the primary key):
    a window holds users x days x hours rows, too many to add up in Python for every page view.
    """
    first = stats.window_start(now, config.risk_days)
    calendar = [first + timedelta(days=n) for n in range(config.risk_days)]
    found: dict[str, Figures] = defaultdict(Figures)
    c = event_counts.c
    visible = scope.where(c.vendor_id)
    window = [c.day >= first, c.day <= calendar[-1], *([] if visible is None else [visible])]
    mine = [] if user_name is None else [c.key == user_name]
    total = func.sum(c.count).label("n")
    for kind, key, n in conn.execute(select(c.kind, c.key, total).where(c.kind.in_(_COUNTED_KINDS), *window, *mine).group_by(c.kind, c.key)):
        _count(found[key], kind, int(n))
    off_kinds = [kind for hour, kind in enumerate(_HOUR_KINDS) if not config.work_start_hour <= hour < config.work_end_hour]
    weekend = [day for day in calendar if day.weekday() >= 5]
    off = or_(c.kind.in_(off_kinds), c.day.in_(weekend))
    for key, n in conn.execute(select(c.key, total).where(c.kind.in_(_HOUR_KINDS), off, *window, *mine).group_by(c.key)):
        found[key].off_hours += int(n)
    for key in conn.execute(select(c.key).where(c.kind == person_days.ADDRESS_KIND, *window).distinct()).scalars():
        address, name = person_days.split_address_key(key)
        if user_name is None or name == user_name:
            found[name].addresses.add(address)
    mark, newest = stats.folded_upto(conn, stats.PEOPLE_PROGRESS), conn.execute(select(func.max(events.c.seq))).scalar() or 0
    if newest > mark:
        for kind, vendor_id, day, key, n in person_days.counted(conn, after=mark, upto=newest, day=stats._day(conn)):
            if not first <= day <= calendar[-1] or not scope.allows(vendor_id):
                continue
            used = None
            if kind == person_days.ADDRESS_KIND:
                used, key = person_days.split_address_key(key)
            if not kind.startswith("u:") or (user_name is not None and key != user_name):
                continue
            if used is not None:
                found[key].addresses.add(used)
            elif kind.startswith(person_days.HOUR_KIND):
                found[key].off_hours += n if off_hours(day, int(kind[len(person_days.HOUR_KIND) :]), config) else 0
            else:
                _count(found[key], kind, n)
    if found:
        history = select(c.key).where(c.kind == person_days.ADDRESS_KIND, c.day >= first - timedelta(days=HISTORY_DAYS), c.day < first).distinct()
        for key in conn.execute(history.where(visible) if visible is not None else history).scalars():
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
