"""Deliver queued alerts to the webhook and syslog targets, never on the ingest path."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Protocol

from agent import __version__
from server.collector import Collector
from server.settings import AlertsSection
from server.siem.errors import DeliveryError
from server.siem.syslog import SyslogSender
from server.siem.webhook import WebhookSender
from server.store import outbox

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)


class Sender(Protocol):
    def send(self, event: dict, *, product_version: str) -> None: ...

    def close(self) -> None: ...


def build_senders(alerts: AlertsSection) -> dict[str, Sender]:
    """One sender per configured target; a bad target setting stops the collector at start."""
    senders: dict[str, Sender] = {}
    ca_file = alerts.ca_file or None
    if alerts.webhook_url:
        senders["webhook"] = WebhookSender(alerts.webhook_url, secret=alerts.webhook_secret or None, ca_file=ca_file)
    if alerts.syslog_host:
        senders["syslog"] = SyslogSender(
            alerts.syslog_host, alerts.syslog_port, protocol=alerts.syslog_protocol, ca_file=ca_file if alerts.syslog_protocol == "tls" else None
        )
    return senders


def deliver_due(collector: Collector, senders: dict[str, Sender], *, batch: int = 50) -> int:
    """Send every due alert this process can claim; returns how many were delivered."""
    delivered = 0
    while True:
        now = collector.clock()
        with collector.db.write() as conn:
            claimed = outbox.claim(conn, now=now, lease=LEASE, limit=batch)
        if not claimed:
            return delivered
        for outbox_id, target, event in claimed:
            sender = senders.get(target)
            try:
                if sender is None:
                    raise DeliveryError(f"{target} is no longer configured on this collector")
                sender.send(event, product_version=__version__)
            except DeliveryError as exc:
                with collector.db.write() as conn:
                    gave_up = outbox.attempt_failed(
                        conn, outbox_id=outbox_id, error=str(exc), now=collector.clock(), max_attempts=collector.settings.alerts.max_attempts
                    )
                collector.metrics.alerts.labels(target, "gave_up" if gave_up else "retry").inc()
                log.warning("alert %s for event %s not delivered (%s)%s", target, event.get("id"), exc, "; giving up" if gave_up else "")
                continue
            with collector.db.write() as conn:
                outbox.delivered(conn, outbox_id=outbox_id, now=collector.clock())
            collector.metrics.alerts.labels(target, "delivered").inc()
            delivered += 1
        if len(claimed) < batch:
            return delivered
