"""The login sequence the API and the UI both run: refuse, slow down, then check the password.

The rules live in ``server.store.logins``; this only orders them. The wait happens on the
event loop between two transactions, so a slowed name holds neither a worker thread nor the
database while it waits.
"""

from __future__ import annotations

from datetime import timedelta

import anyio
from anyio import to_thread

from server.collector import Collector
from server.settings import AuthSection
from server.store import logins
from server.store.users import User


def rules(auth: AuthSection) -> logins.LoginRules:
    return logins.LoginRules(
        per_name_and_address=auth.failed_login_limit,
        per_address=auth.failed_login_address_limit,
        window=timedelta(seconds=auth.failed_login_window_s),
        max_delay_s=auth.failed_login_max_delay_s,
    )


async def log_in(collector: Collector, *, name: str, password: str, address: str | None, via: str) -> tuple[User, str] | None:
    """(user, session token), or None for a wrong name or password; RateLimited when refused."""
    auth = collector.settings.auth
    limits = rules(auth)

    def check() -> float:
        with collector.db.read() as conn:
            return logins.check(conn, name=name, address=address, now=collector.clock(), rules=limits)

    def attempt() -> tuple[User, str] | None:
        with collector.db.write() as conn:
            return logins.attempt(
                conn,
                name=name,
                password=password,
                address=address,
                country=collector.country(address),
                now=collector.clock(),
                rules=limits,
                session_lifetime=timedelta(hours=auth.session_hours),
                via=via,
            )

    delay = await to_thread.run_sync(check)
    if delay:
        await anyio.sleep(delay)
    return await to_thread.run_sync(attempt)
