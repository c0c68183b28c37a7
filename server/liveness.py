"""Agents' liveness in memory: heartbeats answered without the database, liveness written in batches.

Each collector process remembers every agent not revoked and not offline for longer than
``OFFLINE_HORIZON`` (learned at start, about 1 KiB each: 20 MiB for 20,000) and the ones it served
since; agents it has not seen within that horizon are forgotten by the reread. A heartbeat is answered from memory when nothing
but liveness changed: the credential matches the hash memory holds, the agent calls from the
address this process last recorded for it (judged against its vendor's current office ranges), its
report's state (versions, rule errors, each source's state) is the one stored, no command waits
for it and what memory relies on is fresh. Its last-seen time, the report's counters (spool
depth, drops, source messages) and the address's count are then buffered here, and ``flush``
writes them in one transaction every ``agents.liveness_flush_s`` (the maintenance thread; also
before each offline sweep, before this collector's agent pages read, and on stop). Everything else
takes the synchronous path, which writes at once: first contact in this process, a new or
re-judged address, a changed state, a pending command. So what review pages show is exact at
once on the collector that serves them; elsewhere last-seen times, counters, address counts and
agents coming back online lag by at most the flush interval, and a crash loses at most that much.

Coming back is buffered too. After an outage longer than ``offline_after_s`` the whole fleet is
offline and calls again within a minute; one synchronous transaction and an ``agent.online`` event
each (about 3 ms of CPU) is what kept 20,000 returning agents' heartbeats from being answered in
time (docs/performance.md, issue 20). So an agent memory holds as offline, or that this process
has not seen within half of ``offline_after_s`` (another collector may have swept it meanwhile),
is answered from memory as well, its heartbeat marked a return; the flush first brings the
returns back with one conditional UPDATE (``status = 'offline'``, ``agents.bring_back``) and raises
``agent.online`` for exactly the agents that statement flipped, in the same transaction as their
last-seen times.

Collectors over one database agree on who is offline because only two statements change an
agent's status, both conditional and atomic: the sweep flips ``online`` rows silent for
``offline_after_s`` to offline, ``bring_back`` flips ``offline`` rows to online. So an agent goes
offline once and comes back once, whichever collectors sweep it and hear it again, and each flip
raises its one event. Any other buffered write lands only on a row still ``online`` and not seen
later by another collector: it never changes a status. An agent whose buffered write found it
offline (swept by another collector before this one wrote what it heard) is held as offline here,
so its next heartbeat is a return. ``offline_after_s`` (at least 30 s) is far above the flush
interval (at most 10 s), so a return written by the flush is never older than a sweep could count.

What memory relies on is reread every ``REFRESH_S`` by every process: revocations, vendors'
office ranges, each vendor's device policy version and the agents with commands pending. So a
revoked agent is refused, and a command or policy made on another collector reaches the agent,
within ``REFRESH_S``; on the collector that made the change at once, since this process's writes
to those tables (seen by engine events) send the next heartbeats the synchronous way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Delete, Insert, Update, event

from agent.events import AGENT_ONLINE
from server import credentials
from server.db.engine import Database
from server.netaddr import in_networks, parse_networks
from server.store import addresses, quarantine
from server.store import agents as agent_store
from server.store import ingest as event_ingest
from server.store.agents import AgentIdentity

log = logging.getLogger(__name__)

REFRESH_S = 5.0
"""Revocations, office ranges, policy versions and pending commands are reread this often."""
PRELOAD_CHUNK = 250
PRELOAD_PAUSE_S = 0.02
"""Learning the agents at start: this many at a time (about 10 ms of CPU), then a pause."""
CLOCK_SKEW_S = 60.0
"""Revocations are reread from this long before the previous read, for clocks of collectors that differ."""
_WATCHED = frozenset({"agent_commands", "device_policies", "vendors"})
"""Tables whose writes in this process make memory's copy stale at once."""
_NOTES = "dlp.liveness"
"""Key in a connection's ``info`` of what to apply to memory once its transaction commits."""

OFFLINE_HORIZON = timedelta(days=7)
"""Offline agents last seen longer ago than this are not held in memory: not learned at start and
forgotten by the reread (``EVICT_EVERY_S``). Every agent not revoked was once held forever, so
machines decommissioned without being revoked, left offline, accumulated in every collector
process (about 1 KiB each). One that does come back after this long takes the synchronous path
for its first heartbeat (one transaction and its ``agent.online``) and is held again from then.
A week keeps a fleet back from a long weekend or a holiday week on the cheap path. A module
constant, not a setting: it trades memory for one transaction per long-absent agent, nothing an
operator needs to tune."""
EVICT_EVERY_S = 600.0
"""How often the reread looks for agents unseen for ``OFFLINE_HORIZON`` (a pass over memory, about 5 ms at 20,000 agents)."""

RETURN_DETAILS = {"reason": "the agent called again after going offline"}
"""The details of every ``agent.online`` event, raised at once or by the flush."""

_STATE_COLUMNS = ("agent_version", "ruleset_version", "bundle_version", "ruleset_error", "fingerprints", "sources")
"""The stored report's columns ``report_state`` reads."""


def report_state(report: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a heartbeat's report is written at once when it changes: versions, the rule error,
    the fingerprint indexes and each source's state. The rest (spool depth, drops, sources'
    messages) are counters that may wait for the next flush."""
    sources = report.get("sources") or {}
    return (
        report.get("agent_version"),
        report.get("ruleset_version"),
        report.get("bundle_version"),
        report.get("ruleset_error"),
        json.dumps(report.get("fingerprints"), sort_keys=True),
        tuple(sorted((name, value.get("state") if isinstance(value, dict) else json.dumps(value, sort_keys=True)) for name, value in sources.items())),
    )


@dataclass(frozen=True)
class _Known:
    identity: AgentIdentity
    secret_hash: str
    state: tuple[Any, ...]


@dataclass(frozen=True)
class _Return:
    """A heartbeat that may bring its agent back online: who, from where, when (the ``agent.online`` event's)."""

    identity: AgentIdentity
    address: str | None
    at: datetime


@dataclass
class _Row:
    """An agent row's pending write: seen then from that address, with that report (None: a call,
    not a heartbeat), and the first heartbeat since memory held the agent as offline or unseen."""

    seen: datetime
    address: str | None
    report: dict[str, Any] | None
    returned: _Return | None = None


class Liveness:
    """One collector process's memory of the agents it served, and their liveness not yet written."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime],
        offline_after_s: float,
        refresh_s: float = REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
        country: Callable[[str | None], str | None] = lambda _address: None,
    ) -> None:
        self._db = db
        self._country = country
        self._clock = clock
        self._monotonic = monotonic
        self._refresh_s = refresh_s
        self._stale_after = timedelta(seconds=offline_after_s / 2)
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._known: dict[str, _Known] = {}
        self._seen: dict[str, datetime | None] = {}
        """When this process last saw each known agent (apart, so a heartbeat allocates no object the garbage collector tracks)."""
        self._offline: set[str] = set()
        """Known agents memory holds as offline: their next heartbeat is a return."""
        self._addresses: dict[str, tuple[str, tuple[str, ...]]] = {}
        """Agent -> the address whose record this process wrote or counted, and the ranges it was judged against."""
        self._rows: dict[str, _Row] = {}
        self._calls: dict[tuple[str, str], list[Any]] = {}
        """(agent, address) -> [calls not yet counted, last of them]."""
        self._ranges: dict[int, tuple[str, ...]] = {}
        self._versions: dict[int, int] = {}
        self._pending: set[str] = set()
        self._fresh_until = 0.0
        self._generation = 0
        self._revoked_since = clock() - timedelta(seconds=CLOCK_SKEW_S)
        self._preloaded = False
        self._evicted = monotonic()
        self._remember = True
        event.listen(db.engine, "after_execute", self._on_execute)
        event.listen(db.engine, "commit", self._on_commit)
        event.listen(db.engine, "rollback", self._on_rollback)

    # --- the heartbeat's memory path -------------------------------------------------------

    def answer(self, token: str | None, address: str | None, state: tuple[Any, ...], now: datetime) -> tuple[AgentIdentity, int | None] | None:
        """The agent and its vendor's device policy version when memory can answer this heartbeat
        (``heartbeat`` then buffers it); None: take the synchronous path."""
        parsed = credentials.parse_token(token, credentials.AGENT_KIND)
        if parsed is None or not self._remember or self._monotonic() >= self._fresh_until:
            return None
        known = self._known.get(parsed.id)
        if known is None or known.state != state:
            return None
        identity = known.identity
        if identity.id in self._pending or self._ranges.get(identity.vendor_id) != identity.allowed_cidrs:
            return None
        recorded = self._addresses.get(identity.id)
        if (recorded[0] if recorded else None) != address or (recorded and recorded[1] != identity.allowed_cidrs):
            return None
        if not credentials.secret_matches(parsed.secret, known.secret_hash):
            return None
        return identity, self._versions.get(identity.vendor_id)

    def vouch(self, token: str) -> str | None:
        """The agent's id when ``token`` is the credential of an agent memory holds, else None
        (admission's count of refused agents, server/api/admission.py: a dictionary lookup and
        one SHA-256, never the database, so a stranger costs nothing and counts nowhere)."""
        parsed = credentials.parse_token(token, credentials.AGENT_KIND)
        known = self._known.get(parsed.id) if parsed is not None else None
        if known is None or parsed is None or not credentials.secret_matches(parsed.secret, known.secret_hash):
            return None
        return parsed.id

    def heartbeat(self, identity: AgentIdentity, *, address: str | None, report: dict[str, Any], now: datetime) -> None:
        """Buffer a heartbeat ``answer`` accepted: its report's counters, last seen, the address's
        count; a return (``flush`` brings the agent back) when memory holds it as offline or has
        not seen it within half of ``offline_after_s``."""
        agent_id = identity.id
        with self._lock:
            seen = self._seen.get(agent_id)
            returned = None
            if agent_id in self._offline or seen is None or now - seen >= self._stale_after:
                self._offline.discard(agent_id)
                returned = _Return(identity, address, now)
            if seen is None or seen < now:
                self._seen[agent_id] = now
            self._buffer(agent_id, address, now, report, returned)
            if address:
                self._count(agent_id, address, now)

    def learn(self, conn: Connection, *, identity: AgentIdentity, token: str, state: tuple[Any, ...], now: datetime, commands: bool) -> None:
        """Once ``conn`` commits a synchronous heartbeat: the agent is online with this state,
        its write supersedes what was buffered, and it has commands pending or not."""
        parsed = credentials.parse_token(token, credentials.AGENT_KIND)
        assert parsed is not None, "authenticated"
        known = _Known(replace(identity, status="online"), credentials.hash_secret(parsed.secret), state)

        def apply() -> None:
            with self._lock:
                self._known[identity.id] = known
                self._seen[identity.id] = now
                self._offline.discard(identity.id)
                row = self._rows.get(identity.id)
                if row is not None and row.seen <= now:
                    del self._rows[identity.id]
                if commands:
                    self._pending.add(identity.id)
                else:
                    self._pending.discard(identity.id)

        self.after_commit(conn, apply)

    # --- event ingest: the batch's agent from memory ----------------------------------------

    def identify(self, conn: Connection, token: str | None, now: datetime) -> AgentIdentity | None:
        """The agent whose credential ``token`` is, from memory, for a call that writes in ``conn``
        (an event batch), instead of ``agents.authenticate``'s read: a round trip and the
        database's CPU on every batch on PostgreSQL. None: authenticate by that read (memory does
        not hold the agent or not with this secret, is not fresh, or the vendor's office ranges
        changed since it learned the agent).

        Memory holds no revoked agent: a revocation through this process is forgotten as it
        commits, one through another collector within ``REFRESH_S``, the bound heartbeats
        answered from memory have. The status is ``offline`` when memory holds the agent offline or
        has not seen it within half of ``offline_after_s`` (another collector may have swept it):
        ``record_agent_call`` then takes the synchronous return, whose conditional flip refuses an
        agent revoked meanwhile (Forbidden) and raises ``agent.online`` only where it took. Otherwise
        ``online``, and the call's last-seen time is buffered as a heartbeat's is: a write that never
        changes a status, so an agent swept meanwhile is found offline by the flush and its next call
        is a return. Once ``conn`` commits, this process saw the agent now (and a return is back)."""
        parsed = credentials.parse_token(token, credentials.AGENT_KIND)
        if parsed is None or not self._remember or self._monotonic() >= self._fresh_until:
            return None
        known = self._known.get(parsed.id)
        if known is None or self._ranges.get(known.identity.vendor_id) != known.identity.allowed_cidrs:
            return None
        if not credentials.secret_matches(parsed.secret, known.secret_hash):
            return None
        agent_id = parsed.id
        seen = self._seen.get(agent_id)
        returning = agent_id in self._offline or seen is None or now - seen >= self._stale_after
        self.after_commit(conn, lambda: self._locked(self._saw, agent_id, now, returning))
        return replace(known.identity, status="offline") if returning else known.identity

    def authenticated(self, conn: Connection, identity: AgentIdentity, token: str, now: datetime) -> None:
        """``conn`` read this agent's credential and wrote its row as ``online`` (a conditional
        UPDATE, or the return's flip): once it commits, memory holds the agent, seen now, so
        ``identify`` answers for its next batches. An agent memory did not hold is learned with no
        report state, so its first heartbeat here still takes the synchronous path (``learn``).

        Only after such a write: on PostgreSQL it holds the row until the commit, so no revocation
        commits between the read and this, and a revocation after it is forgotten when it commits
        (here) or by the reread (elsewhere)."""
        if not self._remember:
            return
        parsed = credentials.parse_token(token, credentials.AGENT_KIND)
        assert parsed is not None, "authenticated"
        online, secret_hash = replace(identity, status="online"), credentials.hash_secret(parsed.secret)

        def apply() -> None:
            with self._lock:
                known = self._known.get(identity.id)
                self._known[identity.id] = _Known(online, secret_hash, known.state if known is not None else ())
                self._saw(identity.id, now, True)

        self.after_commit(conn, apply)

    def _saw(self, agent_id: str, now: datetime, back: bool) -> None:
        """A call of this agent committed (caller holds ``_lock``); ``back``: it is online now. An
        agent forgotten meanwhile (revoked) stays forgotten."""
        if agent_id not in self._known:
            return
        seen = self._seen.get(agent_id)
        if seen is None or seen < now:
            self._seen[agent_id] = now
        if back:
            self._offline.discard(agent_id)

    # --- every agent call (record_agent_call) ----------------------------------------------

    def call(self, conn: Connection, agent_id: str, *, address: str | None, now: datetime) -> bool:
        """An online agent called: seen now, written with the next flush (if ``conn`` commits).
        False: nothing buffered (``write_through``), the caller writes it now."""
        if not self._remember:
            return False
        self.after_commit(conn, lambda: self._locked(self._buffer, agent_id, address, now, None))
        return True

    def counts_address(self, conn: Connection, agent_id: str, address: str, ranges: tuple[str, ...], now: datetime) -> bool:
        """Whether the agent's record of ``address`` exists as judged against ``ranges``; if so the
        call is counted with the next flush, and nothing need be written now."""
        if not self._remember or self._addresses.get(agent_id) != (address, ranges):
            return False
        self.after_commit(conn, lambda: self._locked(self._count, agent_id, address, now))
        return True

    def address_recorded(self, conn: Connection, agent_id: str, address: str, ranges: tuple[str, ...]) -> None:
        """``conn`` wrote the agent's record of ``address``, judged against ``ranges``."""
        self.after_commit(conn, lambda: self._locked(self._addresses.__setitem__, agent_id, (address, ranges)))

    def write_through(self) -> None:
        """Answer nothing from memory and buffer nothing from now on: every call is written at once,
        so collectors agree at once, at the synchronous path's cost (tests of several collectors
        that check agreement through the database rather than the documented windows)."""
        self.flush()
        with self._lock:
            self._remember = False

    def forget(self, agent_ids: list[str]) -> None:
        """These agents' next calls take the synchronous path (revoked, gone, or written elsewhere)."""
        with self._lock:
            for agent_id in agent_ids:
                self._known.pop(agent_id, None)
                self._seen.pop(agent_id, None)
                self._addresses.pop(agent_id, None)
                self._offline.discard(agent_id)

    def went_offline(self, agent_ids: list[str]) -> None:
        """These agents are offline (a sweep flipped them): each one's next heartbeat is a return."""
        with self._lock:
            self._offline.update(agent_id for agent_id in agent_ids if agent_id in self._known)

    # --- writing ---------------------------------------------------------------------------

    def flush(self) -> int:
        """Write what is buffered in one transaction; returns how many rows it touched."""
        with self._flushing:
            with self._lock:
                rows, calls = self._rows, self._calls
                self._rows, self._calls = {}, {}
            if not rows and not calls:
                return 0
            try:
                with self._db.write() as conn:
                    self._bring_back(conn, [row.returned for row in rows.values() if row.returned is not None])
                    lost = agent_store.write_liveness(conn, seen=[(agent_id, row.seen, row.address, row.report) for agent_id, row in rows.items()])
                    addresses.count_agent_calls(conn, calls=[(agent, address, count, seen) for (agent, address), (count, seen) in calls.items()])
            except Exception:
                with self._lock:
                    for agent_id, row in rows.items():
                        newer = self._rows.get(agent_id)
                        if newer is None or newer.seen < row.seen:
                            self._rows[agent_id] = replace(row, returned=row.returned or (newer.returned if newer else None))
                        elif newer.returned is None:
                            newer.returned = row.returned
                    for key, (count, seen) in calls.items():
                        self._count(key[0], key[1], seen, count)
                raise
        if lost:
            self.went_offline([agent_id for agent_id, status in lost.items() if status == "offline"])
            self.forget([agent_id for agent_id, status in lost.items() if status != "offline"])
        return len(rows) + len(calls)

    def _bring_back(self, conn: Connection, returns: list[_Return]) -> None:
        """The returns this flush writes: those still offline are flipped online, once across
        collectors, each with its ``agent.online`` event; the rest were online (or revoked) already.

        The events are raised inside a savepoint, in the flush's one transaction, rather than in a
        second transaction after it: a flip and its event commit together, so no crash between two
        commits can lose an event whose flip took (and no retry can raise it twice). One failing
        event must not roll back every agent's liveness, though, so when the savepoint of them all
        fails they are raised again one savepoint each, and an agent whose event fails alone is put
        back offline (logged), so its next heartbeat retries the return; the common case costs one
        SAVEPOINT, not one per returning agent."""
        if not returns:
            return
        flipped = set(agent_store.bring_back(conn, agent_ids=[r.identity.id for r in returns]))
        came_back = [back for back in returns if back.identity.id in flipped]
        try:
            with conn.begin_nested():
                for back in came_back:
                    self._raise_online(conn, back)
        except Exception:
            log.exception("agent.online events failed together; raising them one at a time")
            for back in came_back:
                try:
                    with conn.begin_nested():
                        self._raise_online(conn, back)
                except Exception:
                    # Offline again: the liveness write then finds it so (went_offline), and its next
                    # heartbeat is a return that raises the event, instead of an online agent with none.
                    agent_store.undo_return(conn, agent_id=back.identity.id)
                    log.exception("agent.online for agent %s not raised; left offline until its next call, everyone else's liveness written", back.identity.id)

    def _raise_online(self, conn: Connection, back: _Return) -> None:
        event_ingest.raise_agent_event(
            conn, agent=back.identity, kind=AGENT_ONLINE, details=RETURN_DETAILS, now=back.at, address=back.address, country=self._country(back.address)
        )

    def close(self) -> None:
        """Flush on stop; a database that is gone by then costs what was buffered, said in the log."""
        try:
            self.flush()
        except Exception:
            log.exception("liveness not written on stop")

    # --- what memory relies on -------------------------------------------------------------

    @property
    def preloaded(self) -> bool:
        return self._preloaded

    def preload(self, conn: Connection) -> int:
        """Learn every agent not revoked (offline ones only if seen within ``OFFLINE_HORIZON``) from the database, so a collector just started answers the
        fleet's heartbeats from memory at once rather than each agent's first one the synchronous
        way, offline agents coming back included. Agents seen before (a heartbeat got in first)
        keep what this process saw.

        In chunks with a pause after each: learning 20,000 agents costs about 0.7 s of CPU, which
        in one go held the interpreter from the requests arriving meanwhile (p99 0.5 s at start)."""
        judged: dict[tuple[str, ...], Any] = {}
        states: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        """One copy of each distinct report state: a fleet mostly reports the same few."""
        learned = 0
        horizon = self._clock() - OFFLINE_HORIZON
        for rows in agent_store.known_agents(conn).partitions(PRELOAD_CHUNK):
            known: dict[str, tuple[_Known, datetime, bool]] = {}
            recorded: dict[str, tuple[str, tuple[str, ...]]] = {}
            for row in rows:
                if row.status == "offline" and (row.last_seen_at is None or row.last_seen_at < horizon):
                    continue  # long gone (OFFLINE_HORIZON): the synchronous path if it ever returns
                ranges = tuple(row.allowed_cidrs or ())
                identity = AgentIdentity(row.id, row.vendor_id, row.name, row.hostname, ranges, "online")
                state = report_state({name: getattr(row, name) for name in _STATE_COLUMNS})
                known[row.id] = (_Known(identity, row.secret_hash, states.setdefault(state, state)), row.last_seen_at, row.status == "offline")
                if row.address is not None:
                    networks = judged.get(ranges) or judged.setdefault(ranges, parse_networks(ranges))
                    if (in_networks(row.address, networks) if ranges else None) == row.expected:
                        recorded[row.id] = (row.address, ranges)
            with self._lock:
                for agent_id, (entry, seen, offline) in known.items():
                    if agent_id not in self._known:
                        self._known[agent_id], self._seen[agent_id] = entry, seen
                        if offline:
                            self._offline.add(agent_id)
                for agent_id, address in recorded.items():
                    self._addresses.setdefault(agent_id, address)
            learned += len(known)
            time.sleep(PRELOAD_PAUSE_S)
        self._preloaded = True
        return learned

    def refresh_due(self, within: float = 0.0) -> bool:
        """Whether memory's copy is out of date, or will be within ``within`` seconds."""
        return self._monotonic() + within >= self._fresh_until

    def refresh(self, conn: Connection) -> None:
        """Reread revocations, office ranges, policy versions and pending commands."""
        generation, started = self._generation, self._clock()
        revoked = agent_store.revoked_since(conn, since=self._revoked_since)
        ranges = agent_store.office_ranges(conn)
        versions, pending = quarantine.reply_state(conn)
        with self._lock:
            for agent_id in revoked:
                self._known.pop(agent_id, None)
                self._offline.discard(agent_id)
            self._ranges, self._versions, self._pending = ranges, versions, pending
            self._revoked_since = started - timedelta(seconds=CLOCK_SKEW_S)
            if self._monotonic() >= self._evicted + EVICT_EVERY_S:
                self._evicted = self._monotonic()
                self._evict(started - OFFLINE_HORIZON)
            if generation == self._generation:
                self._fresh_until = self._monotonic() + self._refresh_s

    def _evict(self, horizon: datetime) -> None:
        """Forget agents this process has not seen since ``horizon`` (``OFFLINE_HORIZON``; caller holds ``_lock``).
        An agent with liveness still buffered was seen lately, so nothing buffered is lost."""
        for agent_id in [agent_id for agent_id, seen in self._seen.items() if seen is None or seen < horizon]:
            self._known.pop(agent_id, None)
            self._seen.pop(agent_id, None)
            self._addresses.pop(agent_id, None)
            self._offline.discard(agent_id)

    def refresh_if_due(self) -> None:
        if self.refresh_due():
            with self._db.read() as conn:
                self.refresh(conn)

    def stale(self) -> None:
        """Memory's copy is out of date: heartbeats take the synchronous path until the next refresh."""
        with self._lock:
            self._generation += 1
            self._fresh_until = 0.0

    # --- transactions ----------------------------------------------------------------------

    def after_commit(self, conn: Connection, apply: Callable[[], None]) -> None:
        conn.info.setdefault(_NOTES, []).append(apply)

    def _on_execute(self, conn: Connection, statement: Any, *_args: Any) -> None:
        if isinstance(statement, Insert | Update | Delete) and getattr(statement.table, "name", None) in _WATCHED:
            self.after_commit(conn, self.stale)

    def _on_commit(self, conn: Connection) -> None:
        revoked = conn.info.pop(agent_store.REVOKED_NOTE, None)
        if revoked:
            self.forget(list(revoked))
        for apply in conn.info.pop(_NOTES, ()):
            apply()

    def _on_rollback(self, conn: Connection) -> None:
        conn.info.pop(_NOTES, None)
        conn.info.pop(agent_store.REVOKED_NOTE, None)

    # --- the buffer (callers hold ``_lock``) -----------------------------------------------

    def _locked(self, step: Callable[..., None], *args: Any) -> None:
        with self._lock:
            step(*args)

    def _buffer(self, agent_id: str, address: str | None, now: datetime, report: dict[str, Any] | None, returned: _Return | None = None) -> None:
        row = self._rows.get(agent_id)
        if row is None:
            self._rows[agent_id] = _Row(now, address, report, returned)
            return
        if row.seen <= now:
            row.seen, row.address = now, address
            if report is not None:
                row.report = report
        if row.returned is None:
            row.returned = returned

    def _count(self, agent_id: str, address: str, now: datetime, calls: int = 1) -> None:
        counted = self._calls.get((agent_id, address))
        if counted is None:
            self._calls[(agent_id, address)] = [calls, now]
        else:
            counted[0] += calls
            counted[1] = max(counted[1], now)
