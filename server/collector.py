"""Everything one collector process holds: settings, database, clock, lookups, metrics.

Nothing here is state that other collector processes would need to agree on; agreement
lives in the database, so any number of these can serve behind one load balancer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from cachetools import LRUCache

from agent.events import SEVERITY_RANK
from server import metrics_access
from server.credentials import AGENT_KIND, ConfirmedTokens
from server.db.engine import Database
from server.keys import load_signing_key, public_key_hex
from server.liveness import Liveness
from server.metrics import Metrics
from server.netaddr import Asn, CountryLookup, default_lookup, parse_networks
from server.pacing import Pacer
from server.pseudonyms import Pseudonyms
from server.settings import ServerSettings
from server.signing import BuiltBundle
from server.store.denylist import Matcher
from server.store.sql import utcnow


class Collector:
    def __init__(
        self,
        settings: ServerSettings,
        *,
        db: Database | None = None,
        clock: Callable[[], datetime] = utcnow,
        countries: CountryLookup | None = None,
    ) -> None:
        self.settings = settings
        self.db = db or Database(settings.effective_database_url)
        self.clock = clock
        self.countries = countries or default_lookup()
        self.trusted_proxies = parse_networks(settings.network.trusted_proxies)
        key_path = settings.signing_key_path
        self.signing_key = load_signing_key(key_path) if key_path.exists() else None
        self.signing_public_key = public_key_hex(self.signing_key) if self.signing_key else ""
        self.pseudonyms = Pseudonyms.in_dir(settings.data_dir)
        self.bundles: LRUCache[tuple[int, str], BuiltBundle] = LRUCache(maxsize=256)
        """Signed bundles by (version, vendor): deterministic, so a cache per process is safe."""
        self.bundles_lock = threading.Lock()
        self.confirmed_agents = ConfirmedTokens(kind=AGENT_KIND)
        """Agent credentials confirmed lately: ingest refuses strangers before parsing their batch."""
        self.metrics = Metrics(self.db)
        self.metrics_token_digest = metrics_access.expected_digest(settings)
        """SHA-256 of the bearer token /metrics requires; None: open (loopback only)."""
        alerts = settings.alerts
        self.alert_targets: tuple[str, ...] = tuple(
            name for name, configured in (("webhook", alerts.webhook_url), ("syslog", alerts.syslog_host)) if configured
        )
        self.alert_min_rank = SEVERITY_RANK[alerts.min_severity]
        self.watch_alert_min_rank = SEVERITY_RANK[alerts.watchlist_min_severity]
        """Watchlisted users' events alert from this rank (server/store/watchlist.py)."""
        self.alerts_pending = threading.Event()
        """Set after a commit that queued alerts, so this process's forwarder sends at once."""
        self.denied = Matcher()
        """Denied networks in memory, reloaded from the database every few seconds (server/store/denylist.py)."""
        self.pacer = Pacer(interval_s=settings.agents.heartbeat_interval_s)
        """Turns for agents with a backlog, told in heartbeat replies (server/pacing.py)."""
        self.liveness = Liveness(self.db, clock=clock, offline_after_s=settings.agents.offline_after_s, country=self.country)
        """Agents served lately and their liveness not yet written (server/liveness.py): flushed
        every ``agents.liveness_flush_s`` by the maintenance thread and on close."""

    def country(self, address: str | None) -> str | None:
        return self.countries.country(address) if address else None

    def asn(self, address: str | None) -> Asn | None:
        """The address's network; the first call loads the ASN data (netaddr.CountryLookup says what it costs)."""
        return self.countries.asn(address) if address and self.settings.network.asn_lookup else None

    def close(self) -> None:
        self.liveness.close()
        self.db.dispose()
