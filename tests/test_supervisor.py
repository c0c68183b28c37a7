"""Background threads that die are restarted with backoff, within bounds, and say so in health,
`dlp-agent status` and the heartbeat."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import agent.bundle_store
from agent.bundle import read_bundle
from agent.cli.status import collect
from agent.config import load_config
from agent.credentials import Credentials, save
from agent.daemon import Daemon
from agent.supervisor import Supervisor
from agent.threads import StoppableThread
from agent.transport import Reply
from server.keys import public_key_hex
from server.signing import build_bundle
from tests.agent_process import write_config
from tests.waiting import wait_for

PACK = 'rule quiet_word { meta: severity = "high" strings: $a = "HUMMINGBIRD-0042" condition: $a }'


class Flaky(StoppableThread):
    """Raises ``failures`` times (or returns unasked, with ``returns``), then idles until stopped."""

    def __init__(self, failures: int, *, returns: bool = False) -> None:
        super().__init__(name="flaky")
        self.failures = failures
        self.returns = returns
        self.runs = 0
        self.steady = threading.Event()

    def run_loop(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            if self.returns:
                return
            raise MemoryError("cannot allocate 8589934592 bytes")
        self.steady.set()
        self.wait(60)


def test_a_thread_that_raises_is_restarted_and_its_deaths_are_reported() -> None:
    supervisor = Supervisor(backoff_start_s=0.01)
    thread = Flaky(2)
    supervisor.watch(thread, "rules")
    thread.start()
    try:
        assert thread.steady.wait(10), "the thread never came back"
        assert thread.runs == 3 and thread.is_alive()
        report = supervisor.health()["rules"]
        assert report["state"] == "ok" and report["deaths"] == 2
        assert report["last_error"] == "MemoryError: cannot allocate 8589934592 bytes" and report["last_died_at"]
    finally:
        thread.stop()
    assert not thread.is_alive()


def test_a_loop_that_returns_unasked_is_a_death_too() -> None:
    supervisor = Supervisor(backoff_start_s=0.01)
    thread = Flaky(1, returns=True)
    supervisor.watch(thread)
    thread.start()
    try:
        assert thread.steady.wait(10)
        assert supervisor.health()["flaky"]["deaths"] == 1 and "without being asked" in supervisor.health()["flaky"]["last_error"]
    finally:
        thread.stop()


def test_restarts_are_bounded() -> None:
    supervisor = Supervisor(backoff_start_s=0.01, max_deaths=3)
    thread = Flaky(1000)
    supervisor.watch(thread)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and thread.runs == 3
    report = supervisor.health()["flaky"]
    assert (report["state"], report["deaths"], report["last_error"]) == ("failed", 3, "MemoryError: cannot allocate 8589934592 bytes")


def test_backoff_doubles_to_its_cap_and_a_long_run_resets_it() -> None:
    now = [0.0]
    supervisor = Supervisor(backoff_start_s=1, backoff_max_s=5, max_deaths=10, stable_s=600, clock=lambda: now[0])
    thread = Flaky(0)
    supervisor.watch(thread)
    delays = []
    for _ in range(5):
        delays.append(supervisor.died(thread, "boom"))
        supervisor.restarted(thread)
    assert delays == [1, 2, 4, 5, 5]
    now[0] += 601
    assert supervisor.died(thread, "boom") == 1
    assert supervisor.health()["flaky"]["deaths"] == 6


def test_a_stop_during_the_backoff_ends_the_thread_at_once() -> None:
    supervisor = Supervisor(backoff_start_s=60)
    thread = Flaky(1)
    supervisor.watch(thread)
    thread.start()
    try:
        wait_for(lambda: supervisor.health().get("flaky", {}).get("state") == "degraded", message="waiting to restart")
    finally:
        thread.stop(timeout=5)  # also when the wait fails: the thread would otherwise sleep out its 60 s backoff
    assert not thread.is_alive() and thread.runs == 1


class FakeCollector:
    """The collector as the daemon's couriers see it: a bundle to fetch, heartbeats and events taken."""

    def __init__(self, bundle: bytes) -> None:
        self.bundle = bundle
        self.heartbeats: list[dict[str, Any]] = []

    def get_signatures(self, etag: str | None, *, max_bytes: int, sink: str | None = None) -> Reply:
        if etag == "v1":
            return Reply("unchanged")
        if sink is not None:
            Path(sink).write_bytes(self.bundle)
            return Reply("ok", etag="v1")
        return Reply("ok", content=self.bundle, etag="v1")

    def heartbeat(self, report: dict[str, Any]) -> Reply:
        self.heartbeats.append(report)
        return Reply("ok", body={"heartbeat_interval_s": 1})

    def post_events(self, events: list[dict[str, Any]]) -> Reply:
        return Reply("ok", body={"accepted": len(events), "duplicates": [], "conflicts": []})

    def close(self) -> None:
        pass


def test_a_rules_updater_killed_by_a_memoryerror_comes_back_and_health_says_so(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Ed25519PrivateKey.generate()
    config = load_config(str(write_config(tmp_path, rules_dir)))
    save(
        config.server.credentials,
        Credentials(
            server_url="https://collector.invalid", agent_id="a-1", credential="secret", vendor="acme-bpo",
            signing_public_key=public_key_hex(key), heartbeat_interval_s=1, enrolled_at="2026-11-24T09:00:00Z",
        ),
    )  # fmt: skip
    bundle = build_bundle(version=1, vendor="acme-bpo", packs={"quiet": PACK}, created_by="alice", created_at="2026-11-24T09:00:00.000Z", key=key)
    collector = FakeCollector(bundle.data)
    monkeypatch.setattr(Daemon, "_client_for", lambda self, credentials: collector)
    checks = []

    def exhausted(*args: Any, **kwargs: Any) -> Any:
        checks.append(1)
        if len(checks) <= 2:
            raise MemoryError("cannot allocate 8589934592 bytes")
        return read_bundle(*args, **kwargs)

    monkeypatch.setattr(agent.bundle_store, "read_bundle", exhausted)
    daemon = Daemon(config)
    daemon.supervisor = Supervisor(backoff_start_s=0.05)
    daemon.start()
    try:
        wait_for(lambda: daemon.rules_updater is not None and daemon.rules_updater.version == 1, timeout=20, message="bundle installed after two deaths")
        assert daemon.rules_updater is not None and daemon.rules_updater.is_alive()
        rules = daemon.health()["rules"]
        assert rules["state"] == "ok" and rules["deaths"] == 2 and rules["last_error"] == "MemoryError: cannot allocate 8589934592 bytes"

        def reported() -> bool:
            return any(beat["sources"].get("rules") == {"state": "ok", "deaths": 2, "last_error": rules["last_error"]} for beat in collector.heartbeats)

        wait_for(reported, timeout=15, message="the deaths in a heartbeat")
        status = wait_for(lambda: collect(config.spool.path)["sources"].get("rules"), timeout=15, message="the deaths in status")
        assert status["deaths"] == 2 and "MemoryError" in status["last_error"]
    finally:
        daemon.stop()
