"""Request and response bodies. Inputs are bounded in every dimension; secrets never appear in outputs."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from agent import events as contract
from agent.events import Channel, EnforcementAction, EnforcementMode, MatchKind, Origin, Severity
from agent.marks.payload import MARK_ID_PATTERN, Carrier
from server.api.egress_schemas import MAX_REFS, DestinationIn, Refs, RepositoryIn, TransferIn
from server.store.review import TriageStatus

MAX_INT = 2**53 - 1
LONE_SURROGATE = "must be valid Unicode: a lone surrogate (\\ud800-\\udfff) cannot be stored"


def encodable(text: str) -> bool:
    """False for text with a lone surrogate, which JSON escapes allow but UTF-8 (and so the database) cannot hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not encodable(value):
        raise ValueError(LONE_SURROGATE)
    return value


Text = Annotated[str, AfterValidator(_storable)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@ -]*$")]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]


def utc_representable(value: datetime) -> bool:
    """False for times like 0001-01-01T00:00+14:00 that fall outside datetime's range in UTC, where they are stored."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        return False
    return True


# Checked inside pydantic-core (no Python call per value): the instant, whatever its offset,
# must fall within the years 1 to 9999 in UTC, where it is stored.
Instant = Annotated[AwareDatetime, Field(ge=datetime.min.replace(tzinfo=UTC), le=datetime.max.replace(tzinfo=UTC))]
MAX_NESTING = 32
MAX_INT_DIGITS = 4000
_INT_LIMIT = 10**MAX_INT_DIGITS


def check_json_values(value: Any, what: str, *, depth: int = 1) -> None:
    """Refuse what could be stored but not read back: nesting past MAX_NESTING (``value`` sits at
    ``depth``), NaN or infinities (which JSON cannot carry) and integers longer than Python reads
    back from text. One pass without recursion, so a hostile document cannot overflow the check."""
    pending = [(value, depth)]
    while pending:
        item, level = pending.pop()
        if level > MAX_NESTING:
            raise ValueError(f"{what} nests deeper than {MAX_NESTING} levels")
        for child in item.values() if isinstance(item, dict) else item:
            kind = type(child)
            # JSON's own types by identity first: strings and nulls, most values, cost one test.
            if kind is str or child is None or kind is bool:
                continue
            if kind is dict or kind is list or isinstance(child, (dict, list)):
                pending.append((child, level + 1))
            elif isinstance(child, float):
                if not math.isfinite(child):
                    raise ValueError(f"{what} holds NaN or Infinity, which JSON cannot carry")
            elif isinstance(child, int) and abs(child) >= _INT_LIMIT:
                raise ValueError(f"{what} holds a number longer than {MAX_INT_DIGITS} digits")


def _nesting(value: Any) -> int:
    """How deeply JSON data nests, found without recursion so a hostile document cannot overflow the check."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- agent API -------------------------------------------------------------------------------


class EnrollIn(_In):
    token: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    hostname: Annotated[Text, StringConstraints(min_length=1, max_length=255)]
    os: Annotated[Text, StringConstraints(max_length=64)] = ""
    machine_id: Annotated[Text, StringConstraints(max_length=128)] = ""
    agent_version: Annotated[Text, StringConstraints(max_length=64)] = ""


class EnrollOut(BaseModel):
    agent_id: str
    credential: str = Field(description="Send as `Authorization: Bearer <credential>` on every agent call.")
    vendor: str
    heartbeat_interval_s: int
    signing_public_key: str = Field(description="Ed25519 public key (hex) that signs rule bundles.")


MAX_LINE_RANGES = 1000
LineNumber = Annotated[int, Field(ge=1, le=2**32 - 1, strict=True)]


def _ordered_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    for index, (start, end) in enumerate(ranges):
        if start > end:
            raise ValueError(f"range {index} starts after it ends: [{start}, {end}]")
    return ranges


LineRanges = Annotated[list[tuple[LineNumber, LineNumber]], Field(max_length=MAX_LINE_RANGES), AfterValidator(_ordered_ranges)]
"""``[[start, end], ...]``: 1-based inclusive line ranges, each checked by one call for the whole list."""


def _left_out_when_none(value: Any) -> bool:
    return value is None


def _unsent() -> Any:
    """The field is stored only when sent: a match gained these with fingerprints, and a YARA match's
    stored body stays exactly what the agent sent (and what older collectors stored)."""
    return Field(default=None, exclude_if=_left_out_when_none)


class MatchIn(BaseModel):
    """One entry of an event's ``matches`` (agent/events.py ``MATCH_FIELDS``): typed where pages,
    exports and filters compute on it; unknown extras are kept and only ever shown as text."""

    model_config = ConfigDict(extra="allow")
    kind: MatchKind | None = _unsent()
    """Absent from agents before fingerprints, and then read as ``yara``."""
    rule: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    namespace: Annotated[str, StringConstraints(max_length=255)] | None = None
    severity: Severity | None = None
    category: Annotated[str, StringConstraints(max_length=64)] | None = None
    tags: list[Annotated[str, StringConstraints(max_length=64)]] = Field(default_factory=list, max_length=64)
    member: Annotated[str, StringConstraints(max_length=4096)] | None = None
    offsets: list[Annotated[int, Field(ge=0, le=MAX_INT)]] = Field(default_factory=list, max_length=1000)
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096), AfterValidator(_storable)] | None = _unsent()
    lines: LineRanges | None = _unsent()
    source_lines: LineRanges | None = _unsent()
    coverage: Annotated[float, Field(ge=0, le=1, strict=True, allow_inf_nan=False)] | None = _unsent()
    index_version: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{1,64}$")] | None = _unsent()
    carrier: Carrier | None = _unsent()
    payload: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{2,128}$")] | None = _unsent()
    frames: Annotated[int, Field(ge=1, le=MAX_INT, strict=True)] | None = _unsent()
    mark_id: Annotated[str, StringConstraints(pattern=MARK_ID_PATTERN)] | None = _unsent()

    @model_validator(mode="after")
    def _fingerprint_whole(self) -> MatchIn:
        if self.kind == contract.MARK_MATCH and (self.carrier is None or (self.payload is None) == (self.mark_id is None)):
            raise ValueError("a mark match needs a carrier and either a payload or a mark_id")
        if self.kind == contract.FINGERPRINT_MATCH:
            missing = [name for name in ("source", "lines", "source_lines", "coverage") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"a fingerprint match needs {', '.join(missing)}")
        if self.lines is not None and self.source_lines is not None and len(self.lines) != len(self.source_lines):
            raise ValueError(f"lines and source_lines pair up, but hold {len(self.lines)} and {len(self.source_lines)} ranges")
        return self


class DeviceIn(BaseModel):
    """What the agent learnt of a removable volume (agent/sources/work.py ``Device``). The known
    fields are typed, since pages compute on them; unknown extras are kept and only ever shown as text."""

    model_config = ConfigDict(extra="allow")
    mountpoint: Annotated[str, StringConstraints(max_length=4096)] | None = None
    device: Annotated[str, StringConstraints(max_length=4096)] | None = None
    fstype: Annotated[str, StringConstraints(max_length=64)] | None = None
    vendor: Annotated[str, StringConstraints(max_length=255)] | None = None
    model: Annotated[str, StringConstraints(max_length=255)] | None = None
    serial: Annotated[str, StringConstraints(max_length=255)] | None = None
    label: Annotated[str, StringConstraints(max_length=255)] | None = None
    size_bytes: Count | None = None
    bus: Annotated[str, StringConstraints(max_length=64)] | None = None
    vendor_id: Annotated[str, StringConstraints(max_length=16)] | None = None
    product_id: Annotated[str, StringConstraints(max_length=16)] | None = None


MAX_CMDLINE_CHARS = 2048
"""Twice the agent's cap (agent/procinfo.py): room for another platform's longer spelling, still bounded."""
MAX_PARENTS = 8
ProcessId = Annotated[int, Field(ge=0, le=2**32 - 1, strict=True)]


class ProcessFactsIn(BaseModel):
    """One process as agent/procinfo.py describes it (agent/events.py ``PROCESS_FIELDS``); any field
    may be null where the platform could not tell. Unknown extras are kept and only shown as text."""

    model_config = ConfigDict(extra="allow")
    pid: ProcessId
    exe: Annotated[str, StringConstraints(max_length=4096)] | None = None
    cmdline: Annotated[str, StringConstraints(max_length=MAX_CMDLINE_CHARS)] | None = None
    uid: ProcessId | None = None
    user: Annotated[str, StringConstraints(max_length=255)] | None = None
    ppid: ProcessId | None = None


class ProcessIn(ProcessFactsIn):
    """An event's ``process``: the writer or clipboard owner, and its parents nearest first."""

    parents: list[ProcessFactsIn] = Field(default_factory=list, max_length=MAX_PARENTS)


class QuarantineRefIn(BaseModel):
    """``enforcement.quarantine``: which quarantined file, and on a quarantine what the collector needs to release it."""

    model_config = ConfigDict(extra="allow")
    id: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", to_lower=True)]
    ephemeral_key: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    original_path: Annotated[str, StringConstraints(max_length=4096)] | None = None
    size: Count | None = None
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None


class EnforcementIn(BaseModel):
    """An event's ``enforcement``: what the agent did (``enforce``) or would have done (``audit``).

    ``action`` is null only when the action failed before it was known (agent/pipeline.py).
    Extras beside the typed ones are kept and only shown as text."""

    model_config = ConfigDict(extra="allow")
    action: EnforcementAction | None
    mode: EnforcementMode
    done: Annotated[bool, Field(strict=True)]
    detail: Annotated[str, StringConstraints(max_length=4096)] | None = None
    quarantine: QuarantineRefIn | None = _unsent()
    command: Annotated[int, Field(ge=1, le=MAX_INT, strict=True)] | None = _unsent()
    rule: Annotated[str, StringConstraints(max_length=1024)] | None = _unsent()
    expires_at: Instant | None = _unsent()


class EventIn(BaseModel):
    """One agent event record (schema 1, docs/events.md). Unknown fields are kept for newer agents;
    names the collector owns are never believed from here (server/store/review.py ``public``)."""

    model_config = ConfigDict(extra="allow")
    schema_: Literal[1] = Field(default=1, alias="schema")
    id: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", to_lower=True)]
    type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]{0,30}\.[a-z][a-z_]{0,30}$")]
    channel: Channel
    occurred_at: Instant
    detected_at: Instant | None = None
    host: Annotated[str, StringConstraints(max_length=255)] | None = None
    user: Annotated[str, StringConstraints(max_length=255)] | None = None
    path: Annotated[str, StringConstraints(max_length=4096)] | None = None
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    size: Count | None = None
    status: Literal["match", "clean", "too_large", "timeout", "encrypted", "unreadable", "skipped"] | None = None
    severity: Severity | None = None
    matches: list[MatchIn] = Field(default_factory=list, max_length=1000)
    device: DeviceIn | None = None
    process: ProcessIn | None = None
    enforcement: EnforcementIn | None = None
    destination: DestinationIn | None = _unsent()
    repository: RepositoryIn | None = _unsent()
    refs: Refs | None = Field(default=None, max_length=MAX_REFS, exclude_if=_left_out_when_none)
    transfer: TransferIn | None = _unsent()

    def columns(self) -> dict[str, Any]:
        """The fields the events table keeps in columns, shaped as the stored record (see store.ingest)."""
        return {
            "id": self.id,
            "channel": self.channel,
            "type": self.type,
            "severity": self.severity,
            "status": self.status,
            "host": self.host,
            "user": self.user,
            "path": self.path,
            "sha256": self.sha256,
            "device": {"serial": self.device.serial} if self.device else None,
            "process": {"exe": self.process.exe} if self.process else None,
            "destination": {"host": self.destination.host} if self.destination else None,
            "matches": [{"rule": m.rule} for m in self.matches],
        }


class BatchIn(_In):
    events: list[EventIn] = Field(max_length=10_000)

    @model_validator(mode="after")
    def _storable_extras(self) -> BatchIn:
        # Unknown fields are kept as sent, so they are the only values no type above has bounded.
        # Checked once per batch rather than per event: a Python call per event cost 10% of ingest.
        for index, event in enumerate(self.events):
            if event.type.startswith(contract.COLLECTOR_TYPE_PREFIX):  # collector_raised, without a call per event
                raise ValueError(f"events[{index}] (id {event.id}) has type {event.type!r}, which only the collector raises")
            if event.channel == contract.ACCESS_CHANNEL:
                raise ValueError(f"events[{index}] (id {event.id}) is in channel 'access', which only the collector uses")
            # A known type in another channel would escape what the collector does by channel
            # (egress events judged against the vendor's allowed remotes, filters, exports).
            expected = contract.AGENT_TYPES.get(event.type)
            if expected is not None and event.channel != expected:
                raise ValueError(f"events[{index}] (id {event.id}) has type {event.type!r} in channel {event.channel!r}; its channel is {expected!r}")
            extras = [extra for extra in _extras(event) if extra]
            if extras:
                check_json_values(extras, f"events[{index}]", depth=0)
        return self


def _extras(event: EventIn) -> list[dict[str, Any] | None]:
    """The unknown fields kept at every level of an event (``None`` where a part has none)."""
    extras = [event.model_extra]
    extras.extend(m.model_extra for m in event.matches)
    if event.device is not None:
        extras.append(event.device.model_extra)
    if event.process is not None:
        extras.extend(_process_extras(event.process))
    if event.enforcement is not None:
        extras.extend(_enforcement_extras(event.enforcement))
    for part in (event.destination, event.repository, event.transfer):
        if part is not None:
            extras.append(part.model_extra)
    return extras


def _process_extras(process: ProcessIn | None) -> list[dict[str, Any] | None]:
    return [] if process is None else [process.model_extra, *(p.model_extra for p in process.parents)]


def _enforcement_extras(enforcement: EnforcementIn | None) -> list[dict[str, Any] | None]:
    if enforcement is None:
        return []
    return [enforcement.model_extra, enforcement.quarantine.model_extra if enforcement.quarantine else None]


class BatchOut(BaseModel):
    accepted: int
    duplicates: list[str] = Field(description="Ids already stored from an earlier send: safe to forget.")
    conflicts: list[str] = Field(description="Ids another agent already used: not stored.")
    suppressed: int = Field(
        default=0,
        exclude_if=lambda count: count == 0,
        description="Of the accepted, egress events to a place the vendor allows and does not want reported: not stored (absent when none).",
    )


class HeartbeatIn(_In):
    agent_version: Annotated[Text, StringConstraints(max_length=64)]
    ruleset_version: Annotated[Text, StringConstraints(max_length=64)] | None = None
    bundle_version: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    """The published signature version the agent runs (null: local packs only)."""
    ruleset_error: Annotated[Text, StringConstraints(max_length=4096)] | None = None
    spool_depth: Count = 0
    dropped: Count = 0
    sources: dict[Annotated[str, StringConstraints(max_length=64)], Any] = Field(default_factory=dict, max_length=32)

    @field_validator("sources")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _nesting(value) > MAX_NESTING:
            raise ValueError(f"source health report nests deeper than {MAX_NESTING} levels")
        encoded = json.dumps(value, allow_nan=False)
        if len(encoded) > 16384:
            raise ValueError("source health report is larger than 16 KiB")
        if "\\u0000" in encoded:
            raise ValueError("must not contain NUL characters")
        if not encodable(json.dumps(value, ensure_ascii=False)):
            raise ValueError(LONE_SURROGATE)
        return value


class HeartbeatOut(BaseModel):
    server_time: str
    heartbeat_interval_s: int
    status: str
    device_policy_version: int | None = Field(default=None, description="The vendor's device policy version (null: none); fetch it when newer than yours.")
    commands: list[dict[str, Any]] = Field(
        default_factory=list, description='Quarantine commands for this agent until it reports them: {"id", "op": "release"|"delete", "quarantine_id", "key"?}.'
    )
    ship_after_s: int | None = Field(
        default=None,
        description="Present when the report's spool_depth is above 0: seconds to wait before posting the backlog (0: now), "
        "the agent's turn in this collector's queue while it drains backlogs (server/pacing.py).",
    )


# --- review API ------------------------------------------------------------------------------


class LoginIn(_In):
    username: Annotated[Text, StringConstraints(min_length=1, max_length=128)]
    password: Annotated[Text, StringConstraints(min_length=1, max_length=1024)]


class LoginOut(BaseModel):
    token: str
    expires_at: str
    user: str
    role: str


class TriageIn(_In):
    status: TriageStatus | None = None
    assignee: Name | None = Field(default=None, description="User name; empty string clears the assignee.")
    clear_assignee: bool = False


class BulkTriageIn(_In):
    ids: list[Annotated[Text, StringConstraints(max_length=36)]] = Field(min_length=1, max_length=500)
    status: TriageStatus


class CommentIn(_In):
    body: Annotated[Text, StringConstraints(min_length=1, max_length=10_000)]


class VendorIn(_In):
    name: Name
    allowed_cidrs: list[Annotated[str, StringConstraints(max_length=64)]] = Field(default_factory=list, max_length=1000)


class VendorRangesIn(_In):
    allowed_cidrs: list[Annotated[str, StringConstraints(max_length=64)]] = Field(max_length=1000)


class EnrollmentTokenIn(_In):
    vendor: Name
    uses: Annotated[int, Field(ge=1, le=100_000)] = 1
    expires_in: Annotated[str, StringConstraints(pattern=r"^\d{1,6}[smhdw]$")] = "7d"


class UserIn(_In):
    name: Name
    role: Literal["admin", "reviewer", "vendor_lead"]
    vendors: list[Name] | None = Field(
        default=None, max_length=1000, description="Limit a reviewer to these vendors; a vendor_lead needs exactly one. None: every vendor."
    )



# --- review API outputs: what leaves the server (no hashes, no secrets) -----------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TriagePublic(_Out):
    status: TriageStatus
    assignee: str | None


class EventPublic(BaseModel):
    """The agent's record (docs/events.md, extra fields kept) plus what the collector knows."""

    model_config = ConfigDict(extra="allow")
    id: str
    seq: int
    agent_id: str | None = Field(description="None for the collector's own `access` events, which are about no agent.")
    vendor: str | None = Field(description="None for the collector's own `access` events, which belong to no vendor.")
    host: str | None
    channel: str
    type: str
    occurred_at: str
    received_at: str
    severity: Severity | None
    path: str | None
    sha256: str | None
    matches: list[dict[str, Any]]
    device: dict[str, Any] | None
    source_ip: str | None
    source_country: str | None
    triage: TriagePublic
    origin: Origin = Field(description="`agent` for what an agent reported, `collector` for what the collector raised itself.")
    claimed_host: str | None = Field(default=None, description="The agent's own name for its host when it differs from the enrolled `host`.")
    agent_claims: dict[str, Any] | None = Field(
        default=None, description="Values the agent sent under names only the collector may set (`vendor`, `triage`, ...), kept as its claim."
    )


class EventPage(_Out):
    items: list[EventPublic]
    next_cursor: str | None


class CommentPublic(_Out):
    author: str
    body: str
    created_at: str


class EventDetail(EventPublic):
    comments: list[CommentPublic]
    related: dict[str, int]


class AddressPublic(_Out):
    address: str
    country: str | None
    expected: bool | None = None
    first_seen_at: str
    last_seen_at: str
    count: int


class AgentPublic(_Out):
    id: str
    hostname: str
    vendor: str
    os: str
    status: Literal["online", "offline", "revoked"]
    enrolled_at: str
    last_seen_at: str
    last_heartbeat_at: str | None
    agent_version: str
    ruleset_version: str | None
    bundle_version: int | None
    ruleset_error: str | None
    spool_depth: int
    dropped: int
    sources: dict[str, Any]
    last_ip: str | None
    unexpected_ip: bool
    ip_addresses: list[AddressPublic]


class AgentList(_Out):
    items: list[AgentPublic]


class VendorPublic(_Out):
    name: str
    allowed_cidrs: list[str]
    created_at: str
    agents: int
    agents_online: int


class VendorList(_Out):
    items: list[VendorPublic]


class UserPublic(_Out):
    name: str
    role: str
    vendors: list[str] | None = Field(description="The vendors this account may see; null: every vendor.")
    disabled: bool
    created_at: str


class UserList(_Out):
    items: list[UserPublic]


class UserCreated(_Out):
    user: str
    role: str
    vendors: list[str] | None = None
    password: str = Field(description="Shown once; stored only as an argon2 hash.")
    api_token: str = Field(description="Shown once; stored only as a SHA-256 hash.")


class EnrollmentTokenCreated(_Out):
    token: str = Field(description="Shown once; stored only as a SHA-256 hash.")
    id: str
    vendor: str
    uses: int
    expires_at: str


class ChainPublic(_Out):
    ok: bool
    entries: int
    problem: str | None


class AuditEntry(_Out):
    seq: int
    at: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    address: str | None
    hash: str


class AuditPage(_Out):
    chain: ChainPublic
    items: list[AuditEntry]
    next_before: int | None


class BulkTriageOut(_Out):
    updated: int
    status: TriageStatus


class MeOut(_Out):
    user: str
    role: str
    ip_addresses: list[AddressPublic]


class SignaturesPublishIn(_In):
    packs: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")], Annotated[Text, StringConstraints(max_length=32 << 20)]] = Field(
        default_factory=dict, max_length=1000, description="pack name (without .yar) -> YARA source"
    )
    vendors: list[Name] | None = Field(default=None, max_length=1000, description="only these vendors get the packs; null: every vendor")
    remove: list[Annotated[str, StringConstraints(max_length=128)]] = Field(default_factory=list, max_length=1000)
    note: Annotated[Text, StringConstraints(max_length=1000)] = ""


class SignaturesRollbackIn(_In):
    version: Annotated[int, Field(ge=1, le=2**31 - 1)]


class SignaturePackPublic(_Out):
    name: str
    sha256: str
    vendors: list[str] | None


class SignatureVersionPublic(_Out):
    version: int
    current: bool
    created_at: str
    created_by: str
    note: str
    rollback_of: int | None
    packs: list[SignaturePackPublic]
    agents: int = Field(description="agents (not revoked) whose last heartbeat reported this version")


class SignatureVersionList(_Out):
    items: list[SignatureVersionPublic]


class PublishedOut(_Out):
    version: int
    rules: int
