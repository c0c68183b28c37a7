"""Collector fixtures: one suite, run against SQLite, PostgreSQL and two collectors over one PostgreSQL.

``backend`` is parametrised, so every test that uses ``collector`` runs on SQLite and on
PostgreSQL, and every test that talks to it through ``client`` also runs on ``PAIR``: two
collectors (two ``Collector`` objects and two apps, each with its own caches, confirmed
credentials and denylist, as two ``dlp-server serve`` processes behind a load balancer would
be) over one PostgreSQL database, with the client's requests alternating between them. The
``collector`` fixture is the first of the two; store calls a test makes through it reach the
same database. PostgreSQL tests share one scratch database per session (created beside the
``test`` database and dropped at the end) and start each test from empty tables; SQLite tests
get a fresh file copied from a migrated template.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get("DLP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class FakeClock:
    """The collector's clock, moved by the test."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _pg_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; the collector contract suite needs it")
    name = f"dlp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    from server.db.engine import Database
    from server.db.migrate import upgrade

    db = Database(url)
    upgrade(db)
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from server.db.engine import Database
    from server.db.migrate import upgrade

    path = tmp_path_factory.mktemp("template") / "collector.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    db.dispose()
    return path


def _truncate_all(url: str) -> None:
    from server.db.tables import metadata

    engine = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        conn.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": "0" * 64})
    engine.dispose()


PAIR = "postgresql-pair"
"""Two collectors over one PostgreSQL database, requests alternating between them (round robin)."""
PAIR_SUITES = frozenset(
    f"tests.test_{name}"
    for name in (
        "collector_agents", "collector_ingest", "collector_auth_ingest", "collector_auth_logins", "collector_auth_metrics", "collector_review",
        "collector_signatures", "collector_devices", "collector_quarantine", "collector_alerts", "cases", "ip_records",
    )
)
"""The suites that run on ``PAIR`` too: what agents, reviewers and admins change and read. That
is 82 more tests, which take as long as the same suites' PostgreSQL runs (307 s of test time
against 336 s, at load 8.5 on 2 cores). The others (UI pages, marks, egress, the fuzzer) reach
the same stores through the same routes; ``DLP_TEST_PAIR=all`` runs their client tests on the
pair too (160 more tests, about 12 minutes there, 2.5 of them the fuzzer's)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "one_collector: the test checks one collector process's own memory (a cache), so it does not run on the pair")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that takes ``backend`` runs on SQLite and PostgreSQL; one of ``PAIR_SUITES``
    that reaches the collector through ``client`` also runs on ``PAIR`` (tests/conftest.py
    imports this hook)."""
    if "backend" not in metafunc.fixturenames:
        return
    if any("backend" in _parametrized_names(marker) for marker in metafunc.definition.iter_markers("parametrize")):
        return  # a test's own "backend" (the agent's file watcher), not the collector's
    on_pair = (
        "client" in metafunc.fixturenames
        and (metafunc.module.__name__ in PAIR_SUITES or os.environ.get("DLP_TEST_PAIR") == "all")
        and metafunc.definition.get_closest_marker("one_collector") is None
    )
    metafunc.parametrize("backend", ["sqlite", "postgresql", *([PAIR] if on_pair else [])], indirect=True)


def _parametrized_names(marker: pytest.Mark) -> list[str]:
    names = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
    return [name.strip() for name in names.split(",")] if isinstance(names, str) else list(names)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend in ("postgresql", PAIR):
        url = request.getfixturevalue("pg_url")
        _truncate_all(url)
        return url
    template = request.getfixturevalue("sqlite_template")
    path = tmp_path / "data" / "collector.db"
    path.parent.mkdir(exist_ok=True)
    shutil.copy(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def write_settings(data_dir: Path, toml: str = "") -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "server.toml").write_text(toml)


@pytest.fixture
def settings_toml() -> str:
    """Override in a test module to give the collector other settings."""
    return ""


@pytest.fixture
def collectors(backend: str, database_url: str, tmp_path: Path, clock: FakeClock, settings_toml: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The collectors serving the test: one, or two over one database on ``PAIR``.

    The data directory is made as ``dlp-server init`` makes it (settings and every key). The
    pair's second collector has its own, copied from the first, as the deployment guide asks of
    collectors on several machines (the same settings and keys: a key one of them made on first
    use would be unknown to the other); its settings are the first's with that directory, so a
    test that changes a setting changes it for both. The two share the clock, as machines kept in
    time do.
    The copies that docs/deployment.md says other collectors see within 5 s (denied networks,
    the watchlist) are read afresh on every use here: the pair then shows whether the other
    collector reads the database at all, without a test waiting out the window. Likewise agents'
    liveness is written through, not held in memory (tests/test_liveness.py covers that across two
    collectors).
    """
    from server.collector import Collector
    from server.keys import create_keys
    from server.settings import load_settings
    from server.store import watchlist
    from server.store.denylist import Matcher

    data_dir = tmp_path / "data"
    write_settings(data_dir, settings_toml)
    create_keys(data_dir, data_dir / "signing.key")
    settings = load_settings(data_dir, environ={"DLP_DATABASE_URL": database_url})
    instances = [Collector(settings, clock=clock)]
    if backend == PAIR:
        second_dir = tmp_path / "data-2"
        shutil.copytree(data_dir, second_dir)
        instances.append(Collector(settings.model_copy(update={"data_dir": second_dir}), clock=clock))
        monkeypatch.setattr(watchlist, "CACHE_SECONDS", 0.0)
        for instance in instances:
            instance.denied = Matcher(refresh_s=0.0)
            instance.liveness.write_through()
    yield instances
    for instance in instances:
        instance.close()


@pytest.fixture
def collector(collectors: list[Any]) -> Any:
    """The collector, as the test's own calls (store functions, sweeps) see it: on ``PAIR``,
    the first collector, with what the test sets on it (a lookup, a setting) set on both."""
    return collectors[0] if len(collectors) == 1 else BothCollectors(collectors)


class BothCollectors:
    """Two collectors as one: attributes are read from the first and written to both."""

    def __init__(self, collectors: list[Any]) -> None:
        object.__setattr__(self, "collectors", collectors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collectors[0], name)

    def __setattr__(self, name: str, value: Any) -> None:
        for instance in self.collectors:
            setattr(instance, name, value)


@pytest.fixture
def client(collectors: list[Any]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from server.api.app import create_app

    apps = [create_app(instance) for instance in collectors]
    app = apps[0] if len(apps) == 1 else RoundRobin(apps)
    with TestClient(app, client=("127.0.0.1", 50000)) as test_client:
        yield test_client


class RoundRobin:
    """A load balancer in front of several apps: each HTTP request goes to the next one in turn.

    One ``TestClient`` over it keeps one cookie jar, as a browser behind the balancer does.
    Lifespan events reach every app. ``state`` is the first app's (``state.collector``).
    """

    def __init__(self, apps: list[Any]) -> None:
        self.apps = apps
        self.state = apps[0].state
        self.served = [0] * len(apps)
        """Requests each app has answered."""
        self._next = 0

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        index = self._next
        self._next = (index + 1) % len(self.apps)
        self.served[index] += 1
        await self.apps[index](scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        from contextlib import AsyncExitStack

        await receive()  # lifespan.startup
        async with AsyncExitStack() as stack:
            for app in self.apps:
                await stack.enter_async_context(app.router.lifespan_context(app))
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


@dataclass
class Person:
    name: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def add_user(collector: Any, name: str, role: str) -> Person:
    from server.store import users

    with collector.db.write() as conn:
        user, password, token = users.create(conn, name=name, role=role, now=collector.clock())
    return Person(user.name, password, token)


@pytest.fixture
def admin(collector: Any) -> Person:
    return add_user(collector, "alice", "admin")


@pytest.fixture
def reviewer(collector: Any) -> Person:
    return add_user(collector, "rita", "reviewer")


@dataclass
class EnrolledAgent:
    id: str
    credential: str
    vendor: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}


def enrollment_token(collector: Any, vendor: str = "acme-bpo", uses: int = 10, lifetime: timedelta = timedelta(days=7)) -> str:
    from server.store import enrollment

    with collector.db.write() as conn:
        token, _ = enrollment.create_token(conn, vendor=vendor, uses=uses, lifetime=lifetime, created_by="test", now=collector.clock())
    return token


@pytest.fixture
def enroll(client: Any, collector: Any):
    """``enroll(vendor=..., hostname=..., headers=...)`` -> an enrolled agent."""

    def make(vendor: str = "acme-bpo", hostname: str = "ws-1", headers: dict[str, str] | None = None) -> EnrolledAgent:
        token = enrollment_token(collector, vendor)
        response = client.post("/api/v1/enroll", json={"token": token, "hostname": hostname, "os": "linux", "agent_version": "0.1.0"}, headers=headers or {})
        assert response.status_code == 200, response.text
        body = response.json()
        return EnrolledAgent(body["agent_id"], body["credential"], body["vendor"])

    return make


def event_record(**overrides: Any) -> dict[str, Any]:
    """A schema-1 agent event as the agent's policy writes it (docs/events.md)."""
    record = {
        "schema": 1,
        "id": str(uuid.uuid4()),
        "type": "usb.write",
        "channel": "usb",
        "occurred_at": "2026-11-24T08:59:58.120Z",
        "detected_at": "2026-11-24T08:59:58.300Z",
        "host": "ws-1",
        "user": "jdoe",
        "agent_version": "0.1.0",
        "ruleset_version": "148583d2a3f6984c",
        "path": "/media/jdoe/STICK/backup.zip",
        "trigger": "closed",
        "size": 20480,
        "sha256": "9f2c" + "0" * 60,
        "status": "match",
        "reason": None,
        "severity": "critical",
        "matches": [
            {"rule": "private_key_pem", "namespace": "credentials", "severity": "critical", "category": "secret", "description": "PEM key",
             "tags": [], "member": "keys/id_rsa", "offsets": [0], "strings": ["$pem"]}
        ],
        "device": {"mountpoint": "/media/jdoe/STICK", "device": "/dev/sdb1", "fstype": "exfat", "vendor": "SanDisk", "model": "Ultra",
                   "serial": "4C530001", "label": "STICK", "size_bytes": 61505273856, "bus": "usb"},
    }
    record.update(overrides)
    return record


def send_events(client: Any, agent: Any, *records: dict[str, Any]) -> dict[str, Any]:
    """POST ``records`` as one batch from ``agent`` (an ``enroll`` result); the 200 answer's body."""
    answer = client.post("/api/v1/events", json={"events": list(records)}, headers=agent.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def get_event(client: Any, person: Any, event_id: str) -> dict[str, Any]:
    """One event through the review API as ``person`` sees it."""
    answer = client.get(f"/api/v1/events/{event_id}", headers=person.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """A real ``dlp-server serve`` on a loopback port, stopped (and checked) by the test."""

    def __init__(
        self, data_dir: Path, env: dict[str, str], *, port: int | None = None, tls: tuple[Path, Path] | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        import subprocess
        import sys

        self.port = port or free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._verify: str | bool = str(tls[0]) if tls else True
        extra = [*(["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []), *extra_args]
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self._log = open(self.log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--data-dir", str(data_dir), "--port", str(self.port), *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        import requests

        from tests.waiting import wait_for

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"dlp-server serve exited: {self.log.read_text()[-2000:]}")
            try:
                return requests.get(f"{self.url}/healthz", timeout=5, verify=self._verify).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a busy machine's slow first answer
                return False

        wait_for(ready, timeout=timeout, message="collector ready")

    def stop(self, sig: int = 15) -> int:
        """Stop with ``sig``; harmless twice. One that ignores it fails the test but is killed, not left running."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(sig)
                self.process.wait(20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()
        return self.process.returncode

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
