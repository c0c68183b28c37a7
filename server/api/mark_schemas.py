"""Bodies of the marks API: minting a canary, and what marking, tracing and listing marks answer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server.api.schemas import Text
from server.store.marks import MAX_SEAT_CHARS


class CanaryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vendor: Annotated[Text, StringConstraints(min_length=1, max_length=128)]
    seat: Annotated[Text, StringConstraints(max_length=MAX_SEAT_CHARS)] | None = Field(default=None, description="a person or workstation; none: the whole vendor")
    kind: Literal["code", "document", "credential"]  # server/decoys.py KINDS (a test holds them equal)


class CanaryOut(BaseModel):
    mark_id: str
    name: str
    kind: str
    content_base64: str = Field(description="the decoy file to plant in the vendor's copy of the material")
    signature_version: int = Field(description="the signature version that carries the vendor's rebuilt canary pack")


class AppliedItem(BaseModel):
    """One file marked, or refused with ``error`` (the other fields then absent)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    mark_id: str | None = None
    format: str | None = None
    carriers: list[str] | None = None
    size: int | None = None
    marked_size: int | None = None
    content_base64: str | None = None
    error: str | None = None


class AppliedOut(BaseModel):
    items: list[AppliedItem]


class TraceEvidence(BaseModel):
    carriers: list[str]
    frames: int
    strength: Literal["conclusive", "strong", "moderate"]


class TracedMark(BaseModel):
    mark_id: str
    vendor: str
    seat: str | None
    kind: str
    canary_kind: str | None
    minted_at: str
    minted_by: str
    subject: dict[str, Any]
    evidence: TraceEvidence


class TraceItem(BaseModel):
    name: str
    sha256: str
    marks: list[TracedMark]
    error: str | None = None


class TraceOut(BaseModel):
    items: list[TraceItem]


class MarkPublic(BaseModel):
    mark_id: str
    kind: str
    canary_kind: str | None
    vendor: str
    seat: str | None
    subject: dict[str, Any]
    marked_sha256: str | None
    created_by: str
    created_at: str


class MarkList(BaseModel):
    items: list[MarkPublic]
