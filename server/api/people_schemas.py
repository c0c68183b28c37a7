"""Bodies of the people API: timelines, risk scores with their factors, watchlist entries, saved views."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, field_validator

from server.api.schemas import utc_representable

_Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class FactorPublic(BaseModel):
    name: str
    label: str
    figure: float
    saturation: float
    weight: float
    contribution: float


class RiskPublic(BaseModel):
    user: str
    score: float
    events: int
    since: str
    unfamiliar_ips: list[str]
    factors: list[FactorPublic]
    watched: bool = False


class PeopleList(BaseModel):
    items: list[RiskPublic]
    days: int


class TimelineEvent(BaseModel):
    id: str
    occurred_at: str | None
    channel: str
    type: str
    severity: str | None
    triage_status: str
    host: str | None
    user: str | None
    device_serial: str | None
    path: str | None
    source_ip: str | None
    source_country: str | None
    vendor: str | None
    watched: bool = False


class DayCount(BaseModel):
    day: str
    events: int


class AddressUse(BaseModel):
    address: str
    country: str | None
    events: int
    first_seen: str | None
    last_seen: str | None


class CaseLink(BaseModel):
    id: int
    title: str
    status: str
    events: int


class Timeline(BaseModel):
    subject: str
    value: str
    items: list[TimelineEvent]
    next: str | None
    per_day: list[DayCount]
    addresses: list[AddressUse]
    cases: list[CaseLink]


class WatchlistIn(BaseModel):
    user: _Name
    vendor: Annotated[str, StringConstraints(max_length=128)] | None = None
    reason: Annotated[str, StringConstraints(max_length=2000)] = ""
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and (value.tzinfo is None or not utc_representable(value)):
            raise ValueError("needs a time zone, e.g. 2026-12-31T00:00:00Z, within the years 1 to 9999 in UTC")
        return value


class WatchlistEntry(BaseModel):
    id: int
    user: str
    vendor: str | None
    reason: str
    added_by: str
    added_at: str | None
    expires_at: str | None
    active: bool


class WatchlistList(BaseModel):
    items: list[WatchlistEntry]


class Person(BaseModel):
    user: str
    risk: RiskPublic | None
    watchlist: list[WatchlistEntry]
    timeline: Timeline


class ViewIn(BaseModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    query: Annotated[str, StringConstraints(max_length=4000)] = ""
    shared: bool = False


class ViewPublic(BaseModel):
    id: int
    name: str
    query: str
    url: str
    shared: bool
    owner: str
    mine: bool
    created_at: str | None


class ViewList(BaseModel):
    items: list[ViewPublic] = Field(default_factory=list)
