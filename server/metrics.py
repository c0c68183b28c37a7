"""Prometheus metrics of one collector process (scrape each process; agents online comes from the database)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func, select

from server.db.tables import agents

if TYPE_CHECKING:
    from server.db.engine import Database


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("dlp_ingest_events_total", "Events received from agents, by outcome", ["outcome"], registry=self.registry)
        self.batches = Counter("dlp_ingest_batches_total", "Ingest requests, by HTTP status", ["status"], registry=self.registry)
        self.heartbeats = Counter("dlp_heartbeats_total", "Heartbeats received", registry=self.registry)
        self.latency = Histogram(
            "dlp_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.alerts = Counter("dlp_alert_deliveries_total", "Alert deliveries, by target and outcome", ["target", "outcome"], registry=self.registry)
        online = Gauge("dlp_agents", "Agents by status (from the database at scrape time)", ["status"], registry=self.registry)
        self._db = db
        for status in ("online", "offline", "revoked"):
            online.labels(status).set_function(functools.partial(self._count_agents, status))

    def _count_agents(self, status: str) -> float:
        with self._db.read() as conn:
            return float(conn.execute(select(func.count()).select_from(agents).where(agents.c.status == status)).scalar_one())

    def render(self) -> bytes:
        return generate_latest(self.registry)
