"""The spool: durable put, leasing, the size cap, schema upgrades and failure modes, on real SQLite files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent import spool as spool_module
from agent.spool import Spool, SpoolError, SpoolFull
from tests.waiting import wait_for

PAD = 1000


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def event(pad: int = PAD) -> dict[str, Any]:
    """An event whose body size depends only on ``pad`` (uuid4 strings have a fixed length)."""
    return {"id": str(uuid.uuid4()), "type": "file.write", "pad": "x" * pad}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "spool.db")


@pytest.fixture
def size(tmp_path: Path) -> int:
    """Body size of one ``event()``, measured by a spool rather than assumed."""
    with Spool(str(tmp_path / "probe.db"), max_bytes=1 << 20) as probe:
        probe.put(event(), matched=False)
        return probe.bytes_used()


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


def drops(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "spool.dropped"]


def test_put_lease_ack_in_insertion_order(path: str, clock: FakeClock) -> None:
    with Spool(path, max_bytes=1 << 20, clock=clock) as spool:
        events = [event(pad=10) for _ in range(3)]
        for e in events:
            assert spool.put(e, matched=False)
        first = spool.lease(2, lease_seconds=60)
        assert first.events == events[:2]
        second = spool.lease(10, lease_seconds=60)
        assert ids(second.events) == [events[2]["id"]]
        assert spool.lease(10, lease_seconds=60).events == []
        assert spool.ack(first.id) == 2
        assert spool.depth() == 1
        assert spool.ack(first.id) == 0


def test_release_makes_events_leasable_again(path: str, clock: FakeClock) -> None:
    with Spool(path, max_bytes=1 << 20, clock=clock) as spool:
        e = event(pad=10)
        spool.put(e, matched=True)
        lease = spool.lease(10, lease_seconds=60)
        assert spool.release(lease.id) == 1
        again = spool.lease(10, lease_seconds=60)
        assert again.events == [e] and again.id != lease.id


def test_expired_lease_is_leased_again_and_the_stale_ack_deletes_nothing(path: str, clock: FakeClock) -> None:
    with Spool(path, max_bytes=1 << 20, clock=clock) as spool:
        e = event(pad=10)
        spool.put(e, matched=False)
        crashed = spool.lease(10, lease_seconds=30)
        clock.now += 29
        assert spool.lease(10, lease_seconds=30).events == []
        clock.now += 1
        retry = spool.lease(10, lease_seconds=30)
        assert retry.events == [e]
        assert spool.ack(crashed.id) == 0
        assert spool.depth() == 1
        assert spool.ack(retry.id) == 1 and spool.depth() == 0


def test_put_is_idempotent_by_id(path: str) -> None:
    with Spool(path, max_bytes=1 << 20) as spool:
        e = event(pad=10)
        assert spool.put(e, matched=False)
        assert spool.put(dict(e, pad="changed"), matched=True)
        assert spool.stats()["depth"] == 1
        assert spool.lease(10, lease_seconds=60).events == [e]


def test_put_refuses_events_without_an_id_or_not_json(path: str) -> None:
    with Spool(path, max_bytes=1 << 20) as spool:
        with pytest.raises(ValueError):
            spool.put({"type": "file.write"}, matched=False)
        with pytest.raises(ValueError):
            spool.put({"id": "a", "size": float("nan")}, matched=False)
        assert spool.depth() == 0


def test_cap_drops_oldest_routine_first_and_then_refuses_new_events(path: str, size: int) -> None:
    with Spool(path, max_bytes=4 * size + size // 2) as spool:
        m1, r1, r2, m2 = event(), event(), event(), event()
        for e, matched in ((m1, True), (r1, False), (r2, False), (m2, True)):
            assert spool.put(e, matched=matched)
        r3 = event()
        assert spool.put(r3, matched=False)  # r1 goes, not m1, the oldest of all
        m3 = event()
        assert spool.put(m3, matched=True)  # r2 goes
        m4 = event()
        assert spool.put(m4, matched=True)  # r3 goes: only matches left
        assert spool.dropped_total() == 3
        assert not spool.put(event(), matched=False)
        assert not spool.put(event(), matched=True)
        assert spool.dropped_total() == 5
        assert spool.stats()["matched"] == 5  # four matches and the drop report
        held = spool.lease(100, lease_seconds=60).events
        assert [e for e in held if e["type"] != "spool.dropped"] == [m1, m2, m3, m4]
        (report,) = drops(held)
        assert report["dropped"] == 5 and report["channel"] == "agent"


def test_cap_never_evicts_for_an_event_that_cannot_fit(path: str, size: int) -> None:
    with Spool(path, max_bytes=2 * size + size // 2) as spool:
        kept = [event(), event()]
        for e in kept:
            spool.put(e, matched=False)
        assert not spool.put(event(pad=PAD + 2 * size), matched=True)
        assert [e for e in spool.lease(100, lease_seconds=60).events if e["type"] != "spool.dropped"] == kept
        assert spool.dropped_total() == 1


def test_cap_spares_routine_events_under_an_unexpired_lease(path: str, size: int, clock: FakeClock) -> None:
    with Spool(path, max_bytes=2 * size + size // 2, clock=clock) as spool:
        r1, r2 = event(), event()
        spool.put(r1, matched=False)
        spool.put(r2, matched=False)
        in_flight = spool.lease(1, lease_seconds=60)
        r3 = event()
        assert spool.put(r3, matched=False)  # r2 goes: r1 is being shipped
        assert spool.ack(in_flight.id) == 1
        held = spool.lease(100, lease_seconds=60).events
        assert [e for e in held if e["type"] != "spool.dropped"] == [r3]


def test_drop_report_is_updated_in_place_until_leased(path: str, size: int, clock: FakeClock) -> None:
    with Spool(path, max_bytes=2 * size + size // 2, clock=clock) as spool:
        spool.put(event(), matched=False)
        spool.put(event(), matched=False)
        spool.put(event(), matched=False)
        assert spool.depth() == 3  # two routine events and a report of one drop
        clock.now += 5
        spool.put(event(), matched=False)
        assert spool.depth() == 3  # same report, now two drops
        shipped = spool.lease(100, lease_seconds=60)
        (first,) = drops(shipped.events)
        assert first["dropped"] == 2
        assert first["occurred_at"] == "2023-11-14T22:13:25.000Z"
        assert first["first_dropped_at"] == "2023-11-14T22:13:20.000Z"
        uuid.UUID(first["id"])
        # Everything routine is leased now, so the next event is refused and reported anew.
        assert not spool.put(event(), matched=False)
        assert spool.release(shipped.id) == 3
        held = spool.lease(100, lease_seconds=60).events
        assert [d["dropped"] for d in drops(held)] == [2, 1]
        assert len({d["id"] for d in drops(held)}) == 2
    with Spool(path, max_bytes=1 << 20) as reopened:
        assert reopened.dropped_total() == 3


def test_state_round_trips_and_persists(path: str) -> None:
    with Spool(path, max_bytes=1 << 20) as spool:
        assert spool.get_state("ruleset_version") is None
        assert spool.get_state("ruleset_version", "none") == "none"
        spool.set_state("ruleset_version", "2024.05.1")
        spool.set_state("daemon", {"pid": 42, "started_at": "2024-05-01T00:00:00.000Z"})
        spool.set_state("ruleset_version", "2024.05.2")
    with Spool(path, max_bytes=1 << 20) as spool:
        assert spool.all_state() == {
            "daemon": {"pid": 42, "started_at": "2024-05-01T00:00:00.000Z"},
            "ruleset_version": "2024.05.2",
        }


def test_stats(path: str, size: int, clock: FakeClock) -> None:
    with Spool(path, max_bytes=1 << 20, clock=clock) as spool:
        assert spool.stats() == {"depth": 0, "bytes": 0, "dropped_total": 0, "oldest_created_at": None, "matched": 0}
        spool.put(event(), matched=True)
        clock.now += 1
        spool.put(event(), matched=False)
        assert spool.stats() == {
            "depth": 2,
            "bytes": 2 * size,
            "dropped_total": 0,
            "oldest_created_at": 1_700_000_000.0,
            "matched": 1,
        }


def _version(path: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]


def _columns(path: str) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[1] for row in db.execute("PRAGMA table_info(events)")]


def test_older_schema_is_upgraded_in_place(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Spool(path, max_bytes=1 << 20) as old:
        kept = event(pad=10)
        old.put(kept, matched=True)
    assert _version(path) == 1

    def add_source(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE events ADD COLUMN source TEXT")

    monkeypatch.setattr(spool_module, "UPGRADES", [*spool_module.UPGRADES, add_source])
    with Spool(path, max_bytes=1 << 20) as new:
        assert new.lease(10, lease_seconds=60).events == [kept]
    assert _version(path) == 2 and "source" in _columns(path)
    Spool(path, max_bytes=1 << 20).close()  # a step runs once: adding the column again would fail


def test_failed_upgrade_step_leaves_the_old_schema(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Spool(path, max_bytes=1 << 20).close()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE events ADD COLUMN source TEXT")
        db.execute("SELECT no_such_column FROM events")

    monkeypatch.setattr(spool_module, "UPGRADES", [*spool_module.UPGRADES, broken])
    with pytest.raises(SpoolError):
        Spool(path, max_bytes=1 << 20)
    assert _version(path) == 1 and "source" not in _columns(path)


def test_newer_schema_is_refused(path: str) -> None:
    Spool(path, max_bytes=1 << 20).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (?, 0)", (len(spool_module.UPGRADES) + 1,))
    with pytest.raises(SpoolError, match="newer than this agent"):
        Spool(path, max_bytes=1 << 20)
    with pytest.raises(SpoolError, match="newer than this agent"):
        Spool.open_readonly(path)


def test_a_file_that_is_not_a_database_is_refused(path: str) -> None:
    Path(path).write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(SpoolError):
        Spool(path, max_bytes=1 << 20)


def test_concurrent_puts_lose_nothing_while_the_shipper_acks(path: str) -> None:
    spool = Spool(path, max_bytes=1 << 24)
    put_ids: list[str] = []
    shipped: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def scanner() -> None:
        try:
            for _ in range(50):
                e = event(pad=10)
                assert spool.put(e, matched=False)
                put_ids.append(e["id"])
        except BaseException as exc:
            errors.append(exc)

    def shipper() -> None:
        try:
            while not done.is_set():
                lease = spool.lease(25, lease_seconds=60)
                shipped.extend(ids(lease.events))
                spool.ack(lease.id)
        except BaseException as exc:
            errors.append(exc)

    scanners = [threading.Thread(target=scanner) for _ in range(8)]
    shipping = threading.Thread(target=shipper)
    shipping.start()
    for t in scanners:
        t.start()
    for t in scanners:
        t.join()
    done.set()
    shipping.join()
    left = ids(spool.lease(1000, lease_seconds=60).events)
    spool.close()
    assert errors == []
    assert len(put_ids) == 400
    assert sorted(shipped + left) == sorted(put_ids)


def test_readonly_status_reader_while_the_daemon_writes(path: str) -> None:
    with pytest.raises(SpoolError, match="no spool"):
        Spool.open_readonly(path)
    assert not os.path.exists(path)
    with Spool(path, max_bytes=1 << 20) as daemon:
        daemon.put(event(pad=10), matched=True)
        daemon.set_state("ruleset_version", "v1")
        other_writer = sqlite3.connect(path, isolation_level=None)
        other_writer.execute("BEGIN IMMEDIATE")
        other_writer.execute("DELETE FROM events")
        with Spool.open_readonly(path) as status:
            assert status.stats()["depth"] == 1  # not blocked, and sees only committed data
            assert status.get_state("ruleset_version") == "v1"
            other_writer.execute("ROLLBACK")
            other_writer.close()
            daemon.put(event(pad=10), matched=False)
            assert status.depth() == 2 and status.all_state() == {"ruleset_version": "v1"}


CHILD = """
import sys, uuid
from agent.spool import Spool
spool = Spool(sys.argv[1], max_bytes=1 << 30)
while True:
    event_id = str(uuid.uuid4())
    spool.put({"id": event_id, "pad": "x" * 500}, matched=True)
    print(event_id, flush=True)
"""


def test_every_acknowledged_put_survives_sigkill(path: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE, text=True)
    printed: list[str] = []

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if line.endswith("\n"):  # a line cut by the kill was never confirmed
                printed.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(printed) >= 200, timeout=30, message="the child to spool 200 events")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    reader.join(timeout=10)
    assert child.returncode == -signal.SIGKILL
    with Spool.open_readonly(path) as status:
        assert status.depth() >= len(printed)
    with Spool(path, max_bytes=1 << 30) as spool:
        stored = set(ids(spool.lease(1_000_000, lease_seconds=60).events))
    assert set(printed) <= stored


def test_disk_full_rolls_back_and_recovers(path: str, size: int) -> None:
    with Spool(path, max_bytes=2 * size + size // 2 + 100_000) as spool:
        r1, r2 = event(), event()
        spool.put(r1, matched=False)
        spool.put(r2, matched=False)
        before = spool.stats()
        # max_page_count is per connection, so the test reaches the spool's own to fake a full disk.
        db = spool._db
        assert db is not None
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        big = event(pad=PAD + 100_000)  # needs r1 evicted, and new pages
        with pytest.raises(SpoolFull):
            spool.put(big, matched=False)
        assert spool.stats() == before
        db.execute("PRAGMA max_page_count = 1073741823")
        assert spool.put(big, matched=False)
        held = spool.lease(100, lease_seconds=60).events
        assert [e for e in held if e["type"] != "spool.dropped"] == [r2, big]
        assert spool.dropped_total() == 1


def test_close_is_idempotent_and_final(path: str) -> None:
    spool = Spool(path, max_bytes=1 << 20)
    spool.close()
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.put(event(), matched=False)

