"""The collector's schema, declared once for queries and for Alembic's migrations.

Secrets are only ever stored as hashes. Times are UTC (``UtcDateTime`` keeps SQLite and
PostgreSQL comparable). Events are addressed two ways: ``seq`` (the collector's arrival order,
used for keyset paging) and ``id`` (the agent's UUID, which makes ingest idempotent).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Portable auto-increment: BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

vendors = Table(
    "vendors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("allowed_cidrs", JSON, nullable=False, default=list),
    Column("created_at", UtcDateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # admin | reviewer | vendor_lead (server/store/users.py ROLES)
    # The vendors (ids) a reviewer or vendor lead may see; None: every vendor (admins, customer reviewers).
    Column("vendor_ids", JSON),
    Column("password_hash", String(255), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # "api" (scripts) or "session" (a login)
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("last_used_at", UtcDateTime),
    Column("revoked", Boolean, nullable=False, default=False),
    # Sessions (kind "session"): where the login came from, and when it was ended by logging out.
    Column("address", String(45)),
    Column("country", String(2)),
    Column("ended_at", UtcDateTime),
    Index("ix_api_tokens_kind_created_at", "kind", "created_at"),
)

enrollment_tokens = Table(
    "enrollment_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("vendor_id", Integer, ForeignKey("vendors.id"), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("max_uses", Integer, nullable=False),
    Column("uses", Integer, nullable=False, default=0),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

agents = Table(
    "agents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("vendor_id", Integer, ForeignKey("vendors.id"), nullable=False, index=True),
    Column("secret_hash", String(64), nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("os", String(64), nullable=False, default=""),
    Column("machine_id", String(128), nullable=False, default=""),
    Column("agent_version", String(64), nullable=False, default=""),
    Column("ruleset_version", String(64)),
    Column("bundle_version", Integer),
    Column("fingerprints", JSON),  # the indexes the agent runs: [{"name", "version", "fingerprints"}]
    Column("ruleset_error", Text),
    Column("spool_depth", BigInteger, nullable=False, default=0),
    Column("dropped", BigInteger, nullable=False, default=0),
    Column("sources", JSON),
    Column("status", String(16), nullable=False),  # online | offline | revoked
    Column("enrolled_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("last_heartbeat_at", UtcDateTime),
    Column("last_ip", String(45)),
    Column("revoked_at", UtcDateTime),
    Index("ix_agents_status_last_seen_at", "status", "last_seen_at"),
)

events = Table(
    "events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    # Both None only for events the collector raises about its own users (channel "access": unusual
    # logins); such events belong to no vendor, so no vendor-scoped account ever sees them.
    Column("agent_id", String(32), ForeignKey("agents.id")),
    Column("vendor_id", Integer, ForeignKey("vendors.id")),
    Column("channel", String(16), nullable=False),
    Column("type", String(64), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("severity", String(16)),
    Column("severity_rank", SmallInteger, nullable=False, default=0),
    Column("status", String(16)),
    Column("host", String(255)),
    Column("user_name", String(255)),
    Column("path", Text),
    Column("sha256", String(64)),
    Column("device_serial", String(255)),
    # The base name of the event's process executable (``cp``, ``xclip``), for the list's filter.
    Column("process_name", String(255)),
    # An egress event's ``destination.host``, lower-cased (None for local and file transports).
    Column("destination_host", String(255)),
    Column("body", Text, nullable=False),  # the validated record as the agent sent it
    Column("source_ip", String(45)),
    Column("source_country", String(2)),
    Column("triage_status", String(16), nullable=False, default="new"),
    Column("assignee_id", Integer, ForeignKey("users.id")),
    # "agent" or "collector" (agent/events.py): set by who stored the row, never read from a body.
    Column("origin", String(16), nullable=False, default="agent", server_default="agent"),
    Index("ix_events_vendor_id_seq", "vendor_id", "seq"),
    Index("ix_events_agent_id_seq", "agent_id", "seq"),
    Index("ix_events_channel_seq", "channel", "seq"),
    Index("ix_events_severity_rank_seq", "severity_rank", "seq"),
    Index("ix_events_triage_status_seq", "triage_status", "seq"),
    Index("ix_events_user_name_seq", "user_name", "seq"),
    Index("ix_events_host_seq", "host", "seq"),
    Index("ix_events_occurred_at", "occurred_at"),
    Index("ix_events_sha256", "sha256"),
    Index("ix_events_device_serial", "device_serial"),
    Index("ix_events_process_name_seq", "process_name", "seq"),
    # Partial: only egress rows have a destination, so no other insert pays for this index.
    Index(
        "ix_events_destination_host_seq", "destination_host", "seq",
        sqlite_where=text("destination_host IS NOT NULL"), postgresql_where=text("destination_host IS NOT NULL"),
    ),  # fmt: skip
)

event_rules = Table(
    "event_rules",
    metadata,
    Column("event_seq", SeqType, ForeignKey("events.seq", ondelete="CASCADE"), primary_key=True),
    Column("rule", String(255), primary_key=True),
    Index("ix_event_rules_rule_event_seq", "rule", "event_seq"),
)

event_comments = Table(
    "event_comments",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("event_seq", SeqType, ForeignKey("events.seq", ondelete="CASCADE"), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

agent_addresses = Table(
    "agent_addresses",
    metadata,
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("address", String(45), primary_key=True),
    Column("country", String(2)),
    Column("expected", Boolean),  # null: the vendor has no ranges configured
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False, index=True),
    Column("count", BigInteger, nullable=False, default=1),
)

user_addresses = Table(
    "user_addresses",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("address", String(45), primary_key=True),
    Column("country", String(2)),
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False, index=True),
    Column("count", BigInteger, nullable=False, default=1),
)

login_attempts = Table(
    "login_attempts",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("user_name", String(128), nullable=False),
    Column("address", String(45)),
    Column("success", Boolean, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("country", String(2)),
    Column("reason", String(32)),  # why a failure failed: password | disabled | denied_network | rate_limited
    Index("ix_login_attempts_user_name_at", "user_name", "at"),
    Index("ix_login_attempts_address_at", "address", "at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=False),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(255), nullable=False, default=""),
    Column("details", Text, nullable=False),
    Column("address", String(45)),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_target_seq", "target", "seq"),  # a case's history is its entries (target "case:<id>")
)

# Positions where a full walk of the chain (server/maintenance.py, hourly) found it intact. A case's
# evidence file checks from the newest checkpoint at or after the case's first entry to the head,
# instead of re-walking the collector's whole history on every export.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("verified_at", UtcDateTime, nullable=False),
)

# One row: the chain's head. Updating it first serialises appenders on both backends.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", SeqType, nullable=False),
    Column("hash", String(64), nullable=False),
)

alert_outbox = Table(
    "alert_outbox",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("event_seq", SeqType, ForeignKey("events.seq", ondelete="CASCADE"), nullable=False),
    Column("target", String(16), nullable=False),  # webhook | syslog
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("lease_until", UtcDateTime),
    Column("delivered_at", UtcDateTime),
    Column("failed", Boolean, nullable=False, default=False),
    Column("last_error", Text),
    Index("ix_alert_outbox_delivered_at_next_attempt_at", "delivered_at", "next_attempt_at"),
)

# Rule bundles. A version is an immutable snapshot of packs; a rollback is a new version
# whose packs are copied from an older one, so versions only grow (agents refuse replays).
signature_versions = Table(
    "signature_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("rollback_of", Integer),
)

signature_packs = Table(
    "signature_packs",
    metadata,
    Column("version", Integer, ForeignKey("signature_versions.version", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("body", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("vendors", JSON),  # null: every vendor; else the vendor names that get this pack
)

# Fingerprint indexes of a version, by name (one namespace with the packs). The bytes live once
# per content in signature_blobs, in chunks, so a version that keeps an index copies no bytes.
signature_indexes = Table(
    "signature_indexes",
    metadata,
    Column("version", Integer, ForeignKey("signature_versions.version", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("sha256", String(64), ForeignKey("signature_blobs.sha256"), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("vendors", JSON),  # as for packs
    Column("info", JSON, nullable=False),  # what check_index_bytes said of it: fingerprints, files, k, w...
)

signature_blobs = Table(
    "signature_blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

signature_blob_chunks = Table(
    "signature_blob_chunks",
    metadata,
    Column("sha256", String(64), ForeignKey("signature_blobs.sha256", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)

# Daily event counts per vendor for the vendors overview, so it never aggregates a month of
# events per view: ``kind`` is severity | rule | user | device and ``key`` the severity name,
# rule, user name or device serial. Events are folded in by seq, at least a few minutes after
# arrival (server/store/stats.py); ``stats_progress`` holds the last folded seq.
event_counts = Table(
    "event_counts",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("vendor_id", Integer, ForeignKey("vendors.id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("count", BigInteger, nullable=False),
    # SQLite: the rows live in the primary key's B-tree, so a window's counts are one range read.
    sqlite_with_rowid=False,
)

stats_progress = Table(
    "stats_progress",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", SeqType, nullable=False),
)

# USB device control per vendor (server/store/devices.py). ``vendor`` is the vendors row;
# ``vendor_id`` / ``product_id`` in exceptions are USB idVendor / idProduct patterns.
device_policies = Table(
    "device_policies",
    metadata,
    Column("vendor", Integer, ForeignKey("vendors.id"), primary_key=True, autoincrement=False),
    Column("action", String(16), nullable=False),  # audit | read-only | block
    Column("allowed", JSON, nullable=False),  # [{"vendor_id", "product_id", "serial", "note"}]
    Column("version", Integer, nullable=False),  # bumped on every change, exceptions included
    Column("updated_at", UtcDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
)

device_exceptions = Table(
    "device_exceptions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("vendor", Integer, ForeignKey("vendors.id"), nullable=False),
    Column("vendor_id", String(16), nullable=False),
    Column("product_id", String(16), nullable=False),
    Column("serial", String(128), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Column("granted_by", String(128), nullable=False),
    Column("granted_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
    Index("ix_device_exceptions_vendor_expires_at", "vendor", "expires_at"),
)

# Files an agent moved off a removable volume, encrypted to the collector's quarantine key
# (server/store/quarantine.py); only the owning agent can release or delete its copy.
quarantine_items = Table(
    "quarantine_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("quarantine_id", String(36), nullable=False, unique=True),
    Column("agent_id", String(32), ForeignKey("agents.id"), nullable=False, index=True),
    Column("vendor", Integer, ForeignKey("vendors.id"), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("original_path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("ephemeral_key", String(64), nullable=False),  # the agent's X25519 public half, not a secret
    Column("state", String(24), nullable=False),  # held | release_requested | released | delete_requested | deleted | failed
    Column("detail", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_quarantine_items_vendor_state", "vendor", "state"),
)

# Commands queued for one agent, sent in its heartbeat replies until its report completes them.
agent_commands = Table(
    "agent_commands",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("agent_id", String(32), ForeignKey("agents.id"), nullable=False),
    Column("op", String(16), nullable=False),  # release | delete
    Column("quarantine_id", String(36), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("done_at", UtcDateTime),
    Index("ix_agent_commands_agent_id_done_at", "agent_id", "done_at"),
)

# Where a vendor's staff may push and upload (server/store/egress.py): patterns of agent/egress/remotes.py.
egress_policies = Table(
    "egress_policies",
    metadata,
    Column("vendor", Integer, ForeignKey("vendors.id"), primary_key=True, autoincrement=False),
    Column("allowed_remotes", JSON, nullable=False),  # ["git.customer.com/**", ...]
    Column("report_allowed", Boolean, nullable=False),  # keep (at low severity) what went to an allowed remote
    Column("version", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
)

# Marks the collector minted (server/store/marks.py): watermarks and canaries, each for a vendor and
# usually a seat. Only the payload's keyed digest is stored (HMAC with the data directory's marks.key),
# so the database alone cannot tell which text carries a mark nor forge a trace.
marks = Table(
    "marks",
    metadata,
    Column("id", String(19), primary_key=True),  # mk_ + 16 hex: the public name
    Column("digest", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # watermark | canary
    Column("canary_kind", String(16)),  # code | document | credential (canaries only)
    Column("vendor_id", Integer, ForeignKey("vendors.id"), nullable=False),
    Column("seat", String(255)),  # a person or workstation; None: the whole vendor
    Column("subject", JSON, nullable=False),  # what was marked: name, sha256, size, format, carriers, note...
    Column("marked_sha256", String(64), index=True),  # the marked copy the collector wrote
    Column("rule_sha256", String(64)),  # canaries: sha256 of the secret, which the YARA rule checks
    Column("created_by", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_marks_vendor_id_created_at", "vendor_id", "created_at"),
)

# Investigations (server/store/cases.py). A case groups events; its history is the audit log's entries
# with target "case:<id>". ``severity`` is what a reviewer set (None: the worst of its events) and
# ``severity_rank`` the effective one, kept current as events join or leave, so lists sort by index.
cases = Table(
    "cases",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("title", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # open | investigating | closed
    Column("outcome", String(32)),  # closed only: benign | policy_breach | confirmed_leak
    Column("assignee_id", Integer, ForeignKey("users.id")),
    Column("severity", String(16)),
    Column("severity_rank", SmallInteger, nullable=False, default=0),
    Column("due_at", UtcDateTime),
    Column("event_count", Integer, nullable=False, default=0),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("closed_at", UtcDateTime),
    Index("ix_cases_status_due_at", "status", "due_at"),
    Index("ix_cases_updated_at", "updated_at"),
    Index("ix_cases_assignee_id_status", "assignee_id", "status"),
)

case_events = Table(
    "case_events",
    metadata,
    Column("case_id", SeqType, ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
    Column("event_seq", SeqType, ForeignKey("events.seq", ondelete="CASCADE"), primary_key=True),
    Column("added_by", String(128), nullable=False),
    Column("added_at", UtcDateTime, nullable=False),
    Index("ix_case_events_event_seq", "event_seq"),
)

case_comments = Table(
    "case_comments",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("case_id", SeqType, ForeignKey("cases.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("body", Text, nullable=False),
    Column("internal", Boolean, nullable=False, default=False),  # the customer's side only: never shown to vendor leads
    Column("created_at", UtcDateTime, nullable=False),
)

# A staff member's real name shown to their vendor's leads, revealed by a customer reviewer in a case.
reveals = Table(
    "reveals",
    metadata,
    Column("vendor_id", Integer, ForeignKey("vendors.id"), primary_key=True),
    Column("user_name", String(255), primary_key=True),
    Column("case_id", SeqType, ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
    Column("revealed_by", String(128), nullable=False),
    Column("revealed_at", UtcDateTime, nullable=False),
)

# People whose events reviewers follow closely (server/store/watchlist.py); vendor None: any vendor.
watchlist = Table(
    "watchlist",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_name", String(255), nullable=False, index=True),
    Column("vendor_id", Integer, ForeignKey("vendors.id")),
    Column("reason", Text, nullable=False, default=""),
    Column("added_by", String(128), nullable=False),
    Column("added_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
)

# A reviewer's named filter sets for the event list (the list's query string), private or shared.
saved_views = Table(
    "saved_views",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("owner_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("query", Text, nullable=False),
    Column("shared", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("owner_id", "name"),
)

# CIDR ranges refused for agent calls and logins (server/store/denylist.py); vendor None: the whole collector.
denied_networks = Table(
    "denied_networks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cidr", String(64), nullable=False),
    Column("vendor_id", Integer, ForeignKey("vendors.id")),
    Column("note", Text, nullable=False, default=""),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

# Refused calls, one row per (what was refused, address), so a flood costs a counter, not a row each.
denied_calls = Table(
    "denied_calls",
    metadata,
    Column("kind", String(16), primary_key=True),  # agent | enroll | login
    Column("address", String(45), primary_key=True),
    Column("vendor_id", Integer, ForeignKey("vendors.id")),
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False, index=True),
    Column("count", BigInteger, nullable=False, default=1),
)
