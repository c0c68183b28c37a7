"""Background duties of a collector process: liveness sweep, address retention, alert delivery, stats, WAL checkpoints.

Each duty is one atomic statement or a leased claim in the database, so running them in
every collector process behind a load balancer is safe: an agent goes offline once, and an
alert is sent by one process.
"""

from __future__ import annotations

import gc
import logging
from datetime import timedelta

from agent.events import AGENT_OFFLINE
from agent.threads import StoppableThread
from server.alerts import Sender, build_senders, deliver_due
from server.collector import Collector
from server.store import addresses, agents, audit, ingest, stats
from server.store.agents import AgentIdentity

log = logging.getLogger(__name__)

OFFLINE_SEVERITY = "medium"
REREAD_CHECK_S = 1.0
"""How often the liveness reread checks whether it is due."""
RETENTION_INTERVAL_S = 3600.0
ALERT_POLL_S = 5.0
STATS_INTERVAL_S = 30.0
AUDIT_CHECKPOINT_INTERVAL_S = 3600.0
"""A full walk of the audit chain this often; case evidence files check only what came after the last one."""
# Chunks per round: a collector upgraded with a million events catches up in a few rounds.
STATS_CHUNKS_PER_ROUND = 50
CHECKPOINT_PAUSE_S = 0.05
"""Between two SQLite checkpoints under writes: each copies what this many seconds of ingest wrote (hundreds of pages)."""


def sweep_offline(collector: Collector) -> int:
    """Mark silent agents offline and raise one ``agent.offline`` event for each.

    This process's buffered liveness is written first, so an agent it heard from is not taken for
    silent; other collectors' buffers are at most ``agents.liveness_flush_s`` behind, far below
    ``offline_after_s``.
    """
    collector.liveness.flush()
    now = collector.clock()
    silent_since = now - timedelta(seconds=collector.settings.agents.offline_after_s)
    with collector.db.write() as conn:
        gone = agents.mark_offline(conn, silent_since=silent_since)
        for agent in gone:
            identity = AgentIdentity(agent["id"], agent["vendor_id"], "", agent["hostname"], (), "offline")
            silence = int((now - agent["last_seen_at"]).total_seconds())
            ingest.raise_agent_event(
                conn,
                agent=identity,
                kind=AGENT_OFFLINE,
                details={"last_seen_at": agent["last_seen_at"].isoformat(), "silent_for_s": silence},
                now=now,
                severity=OFFLINE_SEVERITY,
                alert_targets=collector.alert_targets,
                alert_min_rank=collector.alert_min_rank,
            )
    if gone:
        collector.liveness.went_offline([agent["id"] for agent in gone])
        log.info("%d agent(s) went offline", len(gone))
        collector.alerts_pending.set()
    return len(gone)


def keep_liveness(collector: Collector) -> None:
    """Reread what answering from memory relies on when due (``reread_liveness``), then write the
    liveness buffered in memory."""
    reread_liveness(collector)
    collector.liveness.flush()


def reread_liveness(collector: Collector) -> None:
    """Reread what answering from memory relies on (revocations, ranges, policy versions, pending
    commands, denied networks) when due; the first run learns every agent (``Liveness.preload``).

    Its own thread, apart from the flush: a flush waits for the database's writer, which a backlog
    of event batches can hold for seconds, and memory left stale meanwhile sent every heartbeat the
    synchronous way, into the same wait (heartbeat p99 of seconds while a fleet drained)."""
    memory = collector.liveness
    # Reread a little before memory would be out of date, so heartbeats never wait for it.
    ahead = collector.settings.agents.liveness_flush_s + 1.0
    if memory.refresh_due(ahead) or collector.denied.due(ahead) or not memory.preloaded:
        with collector.db.read() as conn:
            if not memory.preloaded:
                log.info("%d agent(s) answered from memory from now on", memory.preload(conn))
                # They live as long as the process: keep full collections from walking them again and again (as serve does at start).
                gc.freeze()
            memory.refresh(conn)
            collector.denied.reload(conn)


def purge_expired_addresses(collector: Collector) -> dict[str, int]:
    collector.liveness.flush()  # what is buffered is erased with the rest, not written back after it
    cutoff = collector.clock() - timedelta(days=collector.settings.network.ip_retention_days)
    with collector.db.write() as conn:
        counts = addresses.purge(conn, older_than=cutoff)
    if any(counts.values()):
        log.info("address retention erased %s", ", ".join(f"{n} {kind}" for kind, n in counts.items() if n))
    return counts


def checkpoint_audit(collector: Collector) -> audit.ChainCheck:
    """Walk the whole audit chain; when intact, record a checkpoint evidence files check from (audit.verify_span)."""
    with collector.db.read() as conn:  # the walk reads; only the checkpoint's row is written
        check, seq, digest = audit.checkpoint(conn)
    if seq is not None and digest is not None:
        with collector.db.write() as conn:
            audit.record_checkpoint(conn, seq=seq, digest=digest, now=collector.clock())
    elif not check.ok:
        log.error("the audit log's hash chain is broken: %s", check.problem)
    return check


def roll_up_stats(collector: Collector) -> int:
    """Fold newly arrived events into the vendors overview's daily counts, one short transaction per chunk."""
    folded = 0
    for _ in range(STATS_CHUNKS_PER_ROUND):
        with collector.db.write() as conn:
            step = stats.fold(conn, now=collector.clock())
        if not step:
            break
        folded += step
    return folded


class _Periodic(StoppableThread):
    def __init__(self, name: str, interval: float, duty: object) -> None:
        super().__init__(name)
        self._interval = interval
        self._duty = duty

    def run_loop(self) -> None:
        while not self.stopping:
            try:
                self._duty()  # type: ignore[operator]
            except Exception:
                log.exception("%s failed; retrying in %.0f s", self.name, self._interval)
            if self.wait(self._interval):
                return


class _AlertForwarder(StoppableThread):
    def __init__(self, collector: Collector, senders: dict[str, Sender]) -> None:
        super().__init__("alert-forwarder")
        self._collector = collector
        self._senders = senders

    def on_stop(self) -> None:
        self._collector.alerts_pending.set()

    def run_loop(self) -> None:
        pending = self._collector.alerts_pending
        while not self.stopping:
            pending.clear()
            try:
                deliver_due(self._collector, self._senders)
            except Exception:
                log.exception("alert delivery failed; retrying")
            pending.wait(ALERT_POLL_S)
        for sender in self._senders.values():
            sender.close()


class _Checkpointer(StoppableThread):
    """SQLite's WAL copied into the database file after writes, outside the writers' turn
    (server/db/engine.py says why); asleep while nothing is written."""

    def __init__(self, collector: Collector) -> None:
        super().__init__("wal-checkpoint")
        self._db = collector.db

    def on_stop(self) -> None:
        self._db.wrote.set()

    def run_loop(self) -> None:
        wrote = self._db.wrote
        self._db.checkpoint_in_background()
        try:
            while not self.stopping:
                wrote.wait()
                wrote.clear()
                if self.stopping:
                    return
                try:
                    self._db.checkpoint()
                except Exception:
                    log.exception("WAL checkpoint failed; writers' own checkpoints bound the WAL meanwhile")
                if self.wait(CHECKPOINT_PAUSE_S):
                    return
        finally:
            self._db.checkpoint_in_background(False)


class Maintenance:
    """Starts and stops the background duties of one collector process."""

    def __init__(self, collector: Collector) -> None:
        sweep_every = max(5.0, min(30.0, collector.settings.agents.offline_after_s / 4))
        self._threads: list[StoppableThread] = [
            _Periodic("liveness-sweep", sweep_every, lambda: sweep_offline(collector)),
            _Periodic("liveness-reread", REREAD_CHECK_S, lambda: reread_liveness(collector)),
            _Periodic("liveness-flush", collector.settings.agents.liveness_flush_s, lambda: collector.liveness.flush()),
            _Periodic("address-retention", RETENTION_INTERVAL_S, lambda: purge_expired_addresses(collector)),
            _Periodic("stats-rollup", STATS_INTERVAL_S, lambda: roll_up_stats(collector)),
            _Periodic("audit-checkpoint", AUDIT_CHECKPOINT_INTERVAL_S, lambda: checkpoint_audit(collector)),
        ]
        if collector.db.is_sqlite:
            self._threads.append(_Checkpointer(collector))
        senders = build_senders(collector.settings.alerts)
        if senders:
            self._threads.append(_AlertForwarder(collector, senders))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for thread in self._threads:
            thread.stop()
