"""Bodies of the egress channel: what an egress event carries, and the vendor policy API's input and output.

The event's parts follow agent/events.py (DESTINATION_FIELDS, REPOSITORY_FIELDS, TRANSFER_FIELDS):
typed and bounded where pages, filters and the policy compute on them; unknown extras are kept
for newer agents and only ever shown as text (server/api/schemas.py ``BatchIn`` bounds them).
Patterns' own rules are checked once in server/store/egress.py, which the CLI and the UI call too.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from agent.events import REPOSITORY_REASONS
from server.store.egress import MAX_PATTERNS

MAX_REFS = 100
MAX_REF_CHARS = 1024
MAX_ROOT_COMMITS = 4
_Count = Annotated[int, Field(ge=0, le=2**53 - 1, strict=True)]
_Path = Annotated[str, StringConstraints(max_length=4096)]
_CommitId = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{40}|[0-9a-f]{64})$")]
_Word = Annotated[str, StringConstraints(max_length=64)]


def _known_reason(value: str) -> str:
    if value not in REPOSITORY_REASONS:
        raise ValueError(f"must be one of {', '.join(REPOSITORY_REASONS)}")
    return value


class DestinationIn(BaseModel):
    """Where an egress event's data went (agent/egress/remotes.py ``Destination``)."""

    model_config = ConfigDict(extra="allow")
    tool: _Word | None = None
    transport: _Word | None = None
    host: Annotated[str, StringConstraints(max_length=255)] | None = None
    port: Annotated[int, Field(ge=0, le=65535, strict=True)] | None = None
    path: _Path | None = None
    url: Annotated[str, StringConstraints(max_length=8192)] | None = None
    remote: Annotated[str, StringConstraints(max_length=255)] | None = None


class RepositoryIn(BaseModel):
    """The git repository of a push, remote change or clone, and what the agent's HEAD scan covered."""

    model_config = ConfigDict(extra="allow")
    path: _Path | None = None
    head: _CommitId | None = None
    branch: Annotated[str, StringConstraints(max_length=1024)] | None = None
    root_commits: list[_CommitId] = Field(default_factory=list, max_length=MAX_ROOT_COMMITS)
    protected: Annotated[bool, Field(strict=True)] = False
    reasons: list[Annotated[str, AfterValidator(_known_reason)]] = Field(default_factory=list, max_length=len(REPOSITORY_REASONS))
    protected_folder: _Path | None = None
    copy_of: _Path | None = None
    scan_status: Literal["complete", "partial", "skipped", "failed"] | None = None
    scanned_files: _Count | None = None
    scanned_bytes: _Count | None = None
    matched_files: _Count | None = None


class TransferIn(BaseModel):
    """An upload command's extent: the files its arguments named, scanned and matched."""

    model_config = ConfigDict(extra="allow")
    files_named: _Count | None = None
    files_scanned: _Count | None = None
    files_matched: _Count | None = None
    bytes_scanned: _Count | None = None
    truncated: Annotated[bool, Field(strict=True)] | None = None


Refs = list[Annotated[str, StringConstraints(max_length=MAX_REF_CHARS)]]


class EgressPolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allowed_remotes: list[Annotated[str, StringConstraints(max_length=1024)]] = Field(
        max_length=MAX_PATTERNS, description="patterns like git.customer.com/**, *.customer.com:2222/team/*, /srv/mirror/*"
    )
    report_allowed: bool = Field(default=False, description="keep (at low severity) pushes and uploads to an allowed place")


class EgressPolicyPublic(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vendor: str
    version: int = Field(description="0: never set (nothing is allowed)")
    allowed_remotes: list[str]
    report_allowed: bool
    updated_at: str | None
    updated_by: str | None
