"""Failed-login limits: per (name, address) and per address refuse, per name only slows; failures are audited."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from server.db.tables import audit_log, login_attempts
from server.store import logins

STRANGER, USER_HOME, SPRAYER = "203.0.113.9", "198.51.100.20", "192.0.2.77"
MAX_DELAY_S = 0.4


@pytest.fixture
def settings_toml() -> str:
    # The test client is the trusted proxy, so X-Forwarded-For chooses each request's address.
    return f"""
[network]
trusted_proxies = ["127.0.0.1/32"]

[auth]
failed_login_limit = 3
failed_login_address_limit = 5
failed_login_max_delay_s = {MAX_DELAY_S}
"""


def _api_login(client, name: str, password: str, address: str):
    return client.post("/api/v1/auth/login", json={"username": name, "password": password}, headers={"X-Forwarded-For": address})


def _audit(collector) -> list[tuple[str, str, str, str | None]]:
    with collector.db.read() as conn:
        rows = conn.execute(select(audit_log.c.actor, audit_log.c.action, audit_log.c.target, audit_log.c.address).order_by(audit_log.c.seq)).all()
    return [tuple(row) for row in rows]


def test_a_stranger_failing_on_purpose_does_not_lock_the_user_out(client, collector, admin):
    for _ in range(3):
        assert _api_login(client, admin.name, "guess", STRANGER).status_code == 401
    assert _api_login(client, admin.name, admin.password, STRANGER).status_code == 429, "the guessing pair is refused"

    started = time.monotonic()
    home = _api_login(client, admin.name, admin.password, USER_HOME)
    assert home.status_code == 200, home.text
    assert time.monotonic() - started >= MAX_DELAY_S * 0.9, "the name's failures slow its logins down"

    form = client.get("/ui/login", headers={"X-Forwarded-For": USER_HOME})
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
    page = client.post("/ui/login", data={"username": admin.name, "password": admin.password, "nonce": nonce},
                       headers={"X-Forwarded-For": USER_HOME}, follow_redirects=False)
    assert page.status_code == 303 and "dlp_session" in client.cookies, "the UI follows the same rule"

    failed = [("anonymous", "user.login_failed", admin.name, STRANGER)] * 3
    assert _audit(collector) == [*failed, (admin.name, "user.login", "", USER_HOME), (admin.name, "user.login", "", USER_HOME)]

    collector.clock.advance(seconds=collector.settings.auth.failed_login_window_s + 1)
    assert _api_login(client, admin.name, admin.password, STRANGER).status_code == 200, "failures age out of the window"


def test_one_address_trying_many_names_is_refused(client, collector, admin):
    for index in range(5):
        assert _api_login(client, f"user{index}", "guess", SPRAYER).status_code == 401
    assert _api_login(client, admin.name, admin.password, SPRAYER).status_code == 429
    assert _api_login(client, "user0", "guess", STRANGER).status_code == 401, "another address is not refused for it"
    assert _api_login(client, admin.name, admin.password, USER_HOME).status_code == 200
    with collector.db.read() as conn:
        assert conn.execute(select(login_attempts.c.address).where(login_attempts.c.address == SPRAYER)).all() == [(SPRAYER,)] * 5


def test_a_names_slowdown_doubles_to_its_cap_and_never_refuses(collector):
    rules = logins.LoginRules(per_name_and_address=3, per_address=1000, window=timedelta(minutes=15), max_delay_s=5.0)
    now = collector.clock()
    delays = []
    with collector.db.write() as conn:
        for failures in range(8):
            delays.append(logins.check(conn, name="admin", address="198.51.100.1", now=now, rules=rules))
            # Each failure from a new address: no (name, address) pair ever reaches its limit.
            conn.execute(login_attempts.insert().values(user_name="admin", address=f"203.0.113.{failures}", success=False, at=now))
    assert delays == [0, 0, 0, 1, 2, 4, 5, 5]
