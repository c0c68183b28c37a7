"""Request and response bodies of the cases API; every input bounded."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agent.events import Severity
from server.api.schemas import EventPublic, Instant, Name, Text
from server.store.cases import MAX_EVENTS, CaseStatus, Outcome

EventRef = Annotated[str, StringConstraints(min_length=1, max_length=64)] | Annotated[int, Field(ge=1, le=2**63 - 1)]
"""An event's id, or its collector sequence number."""
Title = Annotated[Text, StringConstraints(min_length=1, max_length=200)]
UserName = Annotated[Text, StringConstraints(min_length=1, max_length=255)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaseIn(_In):
    title: Title
    events: list[EventRef] = Field(min_length=1, max_length=MAX_EVENTS, description="Event ids or sequence numbers.")
    assignee: Name | None = None
    severity: Severity | None = Field(default=None, description="Leave out: the worst of the case's events.")
    due_at: Instant | None = None


class CaseUpdateIn(_In):
    """Fields left out stay as they are; ``assignee``, ``severity`` or ``due_at`` sent as null clear it."""

    title: Title | None = None
    status: CaseStatus | None = None
    outcome: Outcome | None = Field(default=None, description="Required when closing.")
    assignee: Name | None = None
    severity: Severity | None = None
    due_at: Instant | None = None


class CaseEventsIn(_In):
    events: list[EventRef] = Field(min_length=1, max_length=MAX_EVENTS)


class CaseCommentIn(_In):
    body: Annotated[Text, StringConstraints(min_length=1, max_length=10_000)]
    internal: bool = Field(default=False, description="The customer's side only: never shown to vendor leads.")


class RevealIn(_In):
    user: UserName


class CasePublic(BaseModel):
    id: int
    title: str
    status: str
    outcome: str | None
    assignee: str | None
    severity: str | None
    """The effective severity: the one set, else the worst of the events the caller sees."""
    severity_set: str | None
    due_at: str | None
    overdue: bool
    event_count: int
    """Of the events the caller sees."""
    created_by: str
    created_at: str
    updated_at: str
    closed_at: str | None


class CaseList(BaseModel):
    items: list[CasePublic]
    next_cursor: str | None


class CaseCommentPublic(BaseModel):
    id: int
    author: str
    body: str
    internal: bool
    created_at: str


class CaseHistoryEntry(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    details: dict[str, Any] | None


class CasePerson(BaseModel):
    user: str
    vendor: str | None


class CaseDetail(CasePublic):
    events: list[EventPublic]
    comments: list[CaseCommentPublic]
    history: list[CaseHistoryEntry]
    people: list[CasePerson]
    """Staff users named by the case's events, per vendor (empty for vendor leads): whom a reviewer may reveal."""


class RevealOut(BaseModel):
    user: str
    vendors: list[str]
