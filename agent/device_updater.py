"""Keeps the device policy current and carries out the collector's quarantine commands.

The policy is fetched at start and whenever a heartbeat answer names a version newer than the
one held (``device_policy_version``); commands (``release``, ``delete``) come in heartbeat
answers too, repeated until their report reaches the collector, so the ids carried out are kept
in the spool's state and a repeated command is not redone. Volumes mounted are decided again
when the policy changes and when an exception in force expires. Failures are health, never a
crash: the last verified policy stays in force.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.credentials import CredentialsError
from agent.device_policy import DevicePolicyError, PolicyHolder, PolicyStore, verify
from agent.identity import Link
from agent.quarantine import Quarantine
from agent.sources.work import Emit, QuarantineReport
from agent.spool import Spool, SpoolError
from agent.threads import StoppableThread

log = logging.getLogger(__name__)

DONE_KEY = "quarantine_commands_done"
DONE_KEPT = 1000
MAX_PENDING = 1000
RECHECK_S = 3600.0
"""The longest the thread sleeps with nothing to do (an exception expiring sooner wakes it sooner)."""
REPORT_RETRY_S = 1.0
"""How soon a report the work queue refused is offered again."""


class DeviceUpdater(StoppableThread):
    """Args:
    link: this thread's client to the collector.
    holder: the policy in force, replaced here.
    store: where a verified policy is kept for the next start.
    on_change: decide mounted volumes again (a new policy, an exception expired).
    quarantine: carries out release and delete.
    report: where the command reports go (the pipeline's ``submit``).
    spool: keeps the ids of the commands carried out.
    """

    def __init__(
        self,
        link: Link,
        holder: PolicyHolder,
        store: PolicyStore,
        *,
        on_change: Callable[[], None],
        quarantine: Quarantine,
        report: Emit,
        spool: Spool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="device-policy")
        self._link = link
        self._holder = holder
        self._store = store
        self._on_change = on_change
        self._quarantine = quarantine
        self._report = report
        self._spool = spool
        self._clock = clock
        self._wake = threading.Event()
        self._fetch_wanted = threading.Event()
        self._fetch_wanted.set()  # at start
        self._lock = threading.Lock()
        self._pending: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()
        self._unsent: collections.deque[QuarantineReport] = collections.deque(maxlen=MAX_PENDING)
        """Reports of commands carried out that the work queue refused: offered again until taken (the
        command is never redone, so a dropped report would leave it repeated by the collector forever)."""
        self._done: list[int] = [i for i in (spool.get_state(DONE_KEY, []) or []) if isinstance(i, int)]
        self._expiry_seen = clock()

    def heard(self, body: dict[str, Any]) -> None:
        """A heartbeat answer (on the heartbeat's thread): note what it asks for and wake up."""
        version = body.get("device_policy_version")
        if isinstance(version, int) and version > self._holder.policy.version:
            self._fetch_wanted.set()
        commands = body.get("commands")
        if isinstance(commands, list):
            with self._lock:
                for command in commands[:MAX_PENDING]:
                    identifier = command.get("id") if isinstance(command, dict) else None
                    if isinstance(identifier, int) and identifier not in self._done and len(self._pending) < MAX_PENDING:
                        self._pending.setdefault(identifier, command)
        if self._fetch_wanted.is_set() or self._pending:
            self._wake.set()

    def health(self) -> dict[str, str]:
        return self._holder.health()

    def on_stop(self) -> None:
        self._wake.set()

    def run_loop(self) -> None:
        while not self.stopping:
            if self._fetch_wanted.is_set():
                self._fetch_wanted.clear()
                self.fetch_once()
            self._run_commands()
            self._check_expiry()
            self._wake.wait(self._sleep_s())
            self._wake.clear()
        if self._unsent:
            log.error("%d quarantine report(s) not taken before the stop: the collector will show those commands as pending", len(self._unsent))
        self._link.close()

    def _sleep_s(self) -> float:
        now = self._clock()
        coming = [rule.expires_at for rule in self._holder.policy.exceptions if rule.expires_at is not None and rule.expires_at > now]
        return min([RECHECK_S if not self._unsent else REPORT_RETRY_S] + [t - now + 0.2 for t in coming])

    def _check_expiry(self) -> None:
        now = self._clock()
        expired = any(rule.expires_at is not None and self._expiry_seen < rule.expires_at <= now for rule in self._holder.policy.exceptions)
        self._expiry_seen = now
        if expired:
            log.warning("a device exception expired: mounted volumes decided again")
            self._changed()

    def fetch_once(self) -> bool:
        """Fetch, verify, keep and put in force a newer policy; True when one was."""
        try:
            client, credentials = self._link.current()
        except CredentialsError:
            return False  # not enrolled: the stored policy (if any) stays; the shipper says why
        reply = client.get_device_policy(self._holder.etag)
        if reply.kind in ("unchanged", "none"):
            self._holder.note("fetch", None)
            return False
        if reply.kind != "ok" or reply.body is None:
            self._holder.note("fetch", f"device policy not fetched: {reply.detail}")
            log.info("device policy not fetched: %s", reply.detail)
            return False
        held = self._holder.policy
        try:
            policy = verify(
                str(reply.body.get("document", "")), str(reply.body.get("signature", "")),
                public_key_hex=credentials.signing_public_key, vendor=credentials.vendor, held_version=held.version,
            )  # fmt: skip
        except DevicePolicyError as exc:
            self._holder.note("fetch", f"device policy refused: {exc}")
            log.error("device policy refused: %s; keeping version %d", exc, held.version)
            return False
        try:
            self._store.save(str(reply.body["document"]), str(reply.body["signature"]), reply.etag)
        except OSError as exc:
            log.error("device policy %d in force but not kept for the next start: %s", policy.version, exc.strerror)
        self._holder.replace(policy, reply.etag)
        if policy.version == held.version:
            return False
        log.warning("device policy version %d in force: %s, %d allowed, %d exception(s)", policy.version, policy.action, len(policy.allowed), len(policy.exceptions))
        self._changed()
        return True

    def _changed(self) -> None:
        try:
            self._on_change()
        except Exception:  # the policy is in force for new volumes whatever happened to the old ones
            log.exception("mounted volumes not decided again")

    def _run_commands(self) -> None:
        while self._unsent and self._report(self._unsent[0]):
            self._unsent.popleft()
        while not self.stopping:
            with self._lock:
                if not self._pending:
                    return
                identifier, command = self._pending.popitem(last=False)
                if identifier in self._done:
                    continue
            report = self._quarantine.execute(command)
            if not self._report(report):
                log.warning("quarantine command %d carried out; its report waits for room in the work queue", identifier)
                self._unsent.append(report)
            self._done = [*self._done, identifier][-DONE_KEPT:]
            try:
                self._spool.set_state(DONE_KEY, self._done)
            except SpoolError as exc:
                log.error("quarantine command %d not recorded as done: %s", identifier, exc)
