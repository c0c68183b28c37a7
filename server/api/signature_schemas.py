"""Schemas of fingerprint indexes in signature versions, in heartbeats and in the agent list.

They extend the shared families in server/api/schemas.py (which they import) rather than
repeat them: a version as listed gains its indexes, a heartbeat and an agent the indexes the
agent runs.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server.api.schemas import AgentPublic, Count, HeartbeatIn, SignatureVersionPublic, Text, _Out

MAX_REPORTED_INDEXES = 64


class IndexReport(BaseModel):
    """One fingerprint index an agent runs, as its heartbeat says (``FingerprintIndex.describe``, trimmed);
    what a newer agent adds is dropped, not refused."""

    model_config = ConfigDict(extra="ignore")

    name: Annotated[Text, StringConstraints(min_length=1, max_length=128)]
    version: Annotated[Text, StringConstraints(max_length=64)] | None = None
    fingerprints: Count | None = None


class HeartbeatWithIndexesIn(HeartbeatIn):
    fingerprints: list[IndexReport] | None = Field(default=None, max_length=MAX_REPORTED_INDEXES)
    """The fingerprint indexes the agent runs (published and local); absent or null: none."""


class AgentWithIndexesPublic(AgentPublic):
    fingerprints: list[IndexReport] | None = Field(description="fingerprint indexes the agent's last heartbeat reported running")


class AgentWithIndexesList(_Out):
    items: list[AgentWithIndexesPublic]


class SignatureIndexPublic(_Out):
    name: str
    sha256: str
    size: int
    vendors: list[str] | None
    index_version: str | None = Field(description="the index's own version (first 16 hex of its SHA-256), as agents report it")
    fingerprints: int | None
    files: Any = Field(description="corpus files the index was built from (as the index describes them)")


class SignatureVersionWithIndexes(SignatureVersionPublic):
    indexes: list[SignatureIndexPublic]


class SignatureVersionList(_Out):
    items: list[SignatureVersionWithIndexes]


class IndexPublishedOut(_Out):
    version: int
    rules: int
    indexes: dict[str, dict[str, Any]] = Field(description="index name -> what the collector's check read from it (fingerprints, files, k, w, ...)")
