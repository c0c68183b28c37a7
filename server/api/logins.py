"""The login sequence the API and the UI both run: refuse denied networks, refuse or slow down
repeated failures, then check the password (and raise unusual-login events).

The rules live in ``server.store.logins``; this only orders them. The wait happens on the
event loop between two transactions, so a slowed name holds neither a worker thread nor the
database while it waits.
"""

from __future__ import annotations

from datetime import timedelta

import anyio
from anyio import to_thread

from server import credentials
from server.collector import Collector
from server.settings import AuthSection
from server.store import denylist, login_alerts, logins
from server.store import users as user_store
from server.store.users import User


def rules(auth: AuthSection) -> logins.LoginRules:
    return logins.LoginRules(
        per_name_and_address=auth.failed_login_limit,
        per_address=auth.failed_login_address_limit,
        window=timedelta(seconds=auth.failed_login_window_s),
        max_delay_s=auth.failed_login_max_delay_s,
    )


async def log_in(collector: Collector, *, name: str, password: str, address: str | None, via: str) -> tuple[User, str] | None:
    """(user, session token), or None for a wrong name or password; RateLimited or DeniedNetwork when refused.

    A denied network is refused before the password is looked at: the collector-wide list for
    everyone (403, DeniedNetwork), and a scoped account's vendors' lists for that account. The
    latter answers as a wrong password does (None): a 403 only for names of scoped accounts would
    tell a caller on a denied network which names exist. Both are recorded with their reason.
    """
    auth = collector.settings.auth
    limits = rules(auth)
    raising = login_alerts.Raising(asn=collector.asn, alert_targets=collector.alert_targets, alert_min_rank=collector.alert_min_rank)

    def refuse_denied() -> bool:
        """True when a vendor's list refused the login (the caller answers as for a wrong password)."""
        with collector.db.read() as conn:
            if not collector.denied.lists_holding(conn, address):
                return False
            try:
                collector.denied.check(conn, kind="login", address=address, vendor_ids=user_store.vendor_ids_of(conn, name=name))
            except denylist.DeniedNetwork as refused:
                denied = refused
            else:
                return False
        with collector.db.write() as conn:
            logins.refuse_denied(
                conn, name=name, address=denied.address, country=collector.country(address), vendor_id=denied.vendor_id, now=collector.clock(), via=via
            )
        denied.recorded = True
        if denied.vendor_id is not None:
            credentials.dummy_password_check(password)  # the argon2 work a wrong password costs, so timing does not tell it apart
            return True
        raise denied

    def check() -> float:
        with collector.db.read() as conn:
            return logins.check(conn, name=name, address=address, now=collector.clock(), rules=limits)

    def attempt() -> tuple[User, str] | None:
        # The first ASN lookup loads its data (about half a second): here, not under the write lock.
        collector.asn(address)
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
                raising=raising,
            )

    if await to_thread.run_sync(refuse_denied):
        return None
    delay = await to_thread.run_sync(check)
    if delay:
        await anyio.sleep(delay)
    outcome = await to_thread.run_sync(attempt)
    if collector.alert_targets:
        collector.alerts_pending.set()  # an access event may have been queued; the forwarder's poll is cheap
    return outcome
