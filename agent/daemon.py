"""The agent daemon: wires config, rules, scanner, spool, pipeline and sources, and runs them.

Start order: spool, pipeline, then sources; stop order is the reverse (sources
first, so nothing new arrives while queued work drains into the spool). Work
still queued at the deadline is kept in the spool's state and queued again at
the next start; clipboard work is not kept, as its text must never touch disk.
Every background thread runs under one ``Supervisor``: a thread that dies is
restarted with backoff and its deaths show in ``status`` and the heartbeat.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from agent import __version__, volume_control
from agent.bundle import Bundle, BundleError
from agent.bundle_store import BundleStore
from agent.config import AgentConfig
from agent.credentials import Credentials, CredentialsError
from agent.device_guard import DeviceGuard
from agent.device_policy import DevicePolicyError, PolicyHolder, PolicyStore
from agent.device_updater import DeviceUpdater
from agent.egress.scan import EgressScanner
from agent.egress.tracker import EgressTracker
from agent.heap import release_free_heap
from agent.heartbeat import Heartbeat
from agent.identity import Identity, Link
from agent.pipeline import STOP_WAKE_S, Pipeline
from agent.policy import Context
from agent.quarantine import Quarantine
from agent.rules_updater import RulesUpdater
from agent.scanning import ProtectedIndex, RuleError, ScanLimits, Scanner, load_rules
from agent.scanning.cache import ResultCache
from agent.scanning.results import ScanResult
from agent.scanning.rules import RULE_SUFFIXES, Ruleset, compile_rule_files, rule_files
from agent.shipper import Shipper
from agent.sources.base import Source
from agent.sources.clipboard import clipboard_sources
from agent.sources.clipboard_clear import ClipboardClearer
from agent.sources.fanotify_hub import FanotifyHub, open_hub
from agent.sources.files import FileSource, WriteWatch
from agent.sources.mounts import MountWatcher
from agent.sources.proc_events import ProcessEvents
from agent.sources.removable import RemovablePolicy, default_probe
from agent.sources.usb import UsbSource
from agent.sources.work import ClipboardWork, Device, EgressWork, Emit, FileWork, QuarantineReport, Work
from agent.spool import Spool, SpoolError
from agent.supervisor import Supervisor
from agent.threads import StoppableThread
from agent.transport import CollectorClient

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 2.0
HEARTBEAT_NAME_CHARS = 64
HEARTBEAT_MAX_SOURCES = 32
"""What the collector takes in a heartbeat's ``sources`` (server/api/schemas.py ``HeartbeatIn``)."""
PENDING_KEY = "pending_work"
REPORTS_KEY = "pending_reports"
EGRESS_KEY = "pending_egress"
"""Quarantine reports still queued at a stop: the command is already done, so its report must survive."""
WATCH_WAIT_S = 10.0
"""How long start waits for the watched folders present at start to be watched before saying it runs."""
DRAIN_S = 10.0
"""How long queued work may keep scanning once a stop is asked."""
_THREAD_JOIN_S = 5.0  # StoppableThread.stop's default wait, for the sources and the rules updater


def stop_budget_s(config: AgentConfig) -> float:
    """The longest ``Daemon.stop()`` takes: the queue drains (and idle scanners are woken), then the shipper and the heartbeat each
    finish the request in flight (up to two timeouts apiece), then the sources and updater are joined.

    A service manager that must be told how long a stop may take (Windows' SCM wait hint) uses this.
    """
    return DRAIN_S + STOP_WAKE_S + 2 * (2 * config.server.timeout_s) + 2 * _THREAD_JOIN_S


class Daemon:
    """One agent run. ``run()`` blocks until SIGTERM/SIGINT or ``request_stop()``."""

    def __init__(self, config: AgentConfig):
        self.config = config
        self.host = config.agent.host or socket.gethostname()
        self._stop_requested = threading.Event()
        self.spool: Spool | None = None
        self.pipeline: Pipeline | None = None
        self.sources: dict[str, Source] = {}
        self.supervisor = Supervisor()
        self._volumes: dict[str, FileSource] = {}
        self._files_hub: tuple[FanotifyHub | None, str] = (None, "inotify")  # every file source's fanotify reader, or why none
        self._volumes_lock = threading.Lock()
        self._health: _HealthWriter | None = None
        self.shipper: Shipper | None = None
        self.rules_updater: RulesUpdater | None = None
        self.scanner: Scanner | None = None
        self._ruleset_error: str | None = None
        self.heartbeat: Heartbeat | None = None
        self._last_health: dict[str, Any] | None = None
        self._clipboard_enforce: ClipboardClearer | None = None
        self.device_policy = PolicyHolder()
        self.guard: DeviceGuard | None = None
        self.quarantine: Quarantine | None = None

    # Life cycle ------------------------------------------------------------

    def start(self) -> None:
        """Bring everything up; raises RuleError or SpoolError when it cannot."""
        config = self.config
        _lower_priority(config.scan.nice)
        identity = Identity(config.server.credentials)
        self._bundles = BundleStore(config.rules.bundle_dir)
        ruleset, bundle, etag = self._initial_rules(identity)
        scanner = Scanner(
            ruleset,
            limits=ScanLimits(timeout_s=config.scan.timeout_s, max_file_bytes=config.scan.max_file_bytes),
            cache=ResultCache(),
        )
        self.scanner = scanner
        self.spool = spool = Spool(config.spool.path, max_bytes=config.spool.max_bytes)
        released = spool.release_all()
        if released:
            log.info("%d event(s) leased by the previous run (killed mid-send?) will be sent again", released)
        spool.set_state("ruleset_version", ruleset.version)
        spool.set_state("fingerprints", _index_summary(ruleset))
        spool.set_state("bundle_version", bundle.version if bundle else None)
        spool.set_state("daemon", {"pid": os.getpid(), "started_at": time.time(), "version": __version__, "running": False})
        context = Context(
            host=self.host,
            agent_version=__version__,
            ruleset_version=ruleset.version,
            report_clean=config.files.report_clean,
            clipboard_snippets=config.clipboard.snippets,
            egress_report_all=config.egress.report == "all",
            upload_max_events=config.egress.upload_max_events,
        )
        self.shipper = Shipper(spool, Link(identity, self._client_for), batch_events=config.server.batch_events)
        policy_store = self._stored_device_policy(identity)
        self.quarantine = Quarantine(
            config.usb.quarantine_dir, config.usb.released_dir, lambda: self.device_policy.policy.quarantine_key, enabled=config.usb.on_match == "quarantine"
        )
        self.pipeline = pipeline = Pipeline(
            scanner, spool, context, threads=config.scan.threads, queue_size=config.scan.queue_size, on_spooled=self.shipper.wake,
            enforce=self._enforce, egress=EgressScanner(scanner, config.egress),
        )
        updater = DeviceUpdater(
            Link(identity, self._client_for), self.device_policy, policy_store,
            on_change=self._redecide_volumes, quarantine=self.quarantine, report=pipeline.submit, spool=spool,
        )  # fmt: skip
        self.sources["device-policy"] = updater
        shipper = self.shipper

        def heard(body: dict[str, Any]) -> None:
            shipper.heard(body)
            updater.heard(body)

        self.heartbeat = Heartbeat(
            Link(identity, self._client_for), self._heartbeat_report, on_back=shipper.collector_back, on_lost=shipper.collector_lost, on_reply=heard
        )
        for worker in pipeline.workers:
            self.supervisor.watch(worker)
        pipeline.start()
        self.rules_updater = RulesUpdater(
            Link(identity, self._client_for), self._bundles, self._install_bundle,
            interval_s=config.rules.poll_interval_s, version=bundle.version if bundle else 0, etag=etag,
        )
        for label, thread in (("shipper", self.shipper), ("heartbeat", self.heartbeat), ("rules", self.rules_updater)):
            self.supervisor.watch(thread, label)
            thread.start()
        for path in spool.get_state(PENDING_KEY, []) or []:
            pipeline.submit(FileWork(path=path, reason="requeued"))
        spool.set_state(PENDING_KEY, [])
        for report in spool.get_state(REPORTS_KEY, []) or []:
            pipeline.submit(QuarantineReport(**report))
        spool.set_state(REPORTS_KEY, [])
        for item in spool.get_state(EGRESS_KEY, []) or []:
            pipeline.submit(_egress_work(item))
        spool.set_state(EGRESS_KEY, [])
        if config.protected.folders:
            self.sources["protected"] = _ProtectedIndexer(scanner, config.protected.folders, config.files.exclude, config.protected.refresh_minutes * 60)
        self._start_sources()
        files = self.sources["files"]
        # "Running" means watching: a file written after status says so is seen (a big tree may take
        # longer than this to walk into inotify watches; it is then running while that finishes).
        if isinstance(files, FileSource) and not files.wait_watching(WATCH_WAIT_S):
            log.info("the watched folders are still being set up")
        egress = self.sources.get("egress")
        # Likewise a copy of a protected repository is recognised once their root commits are known.
        if isinstance(egress, EgressTracker) and not egress.wait_ready(WATCH_WAIT_S):
            log.info("the protected repositories' root commits are still being read")
        spool.set_state("daemon", {**(spool.get_state("daemon", {}) or {}), "running": True})
        self._health = _HealthWriter(self)
        self.supervisor.watch(self._health, "health")
        self._health.start()
        log.info("agent %s running on %s: ruleset %s (%d rules)", __version__, self.host, ruleset.version, ruleset.rule_count)

    def run(self) -> None:
        # Signal handlers can only be set from the main thread; a service host (the Windows
        # service) runs this on its own thread and stops it through request_stop().
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.request_stop())
        # Whatever this process writes is the agent's alone, files the code does not name included
        # (agent/private.py sets the modes of those it does, whatever the umask).
        os.umask(0o077)
        self.start()
        try:
            self._stop_requested.wait()
        finally:
            self.stop()

    def request_stop(self) -> None:
        self._stop_requested.set()

    def stop(self) -> None:
        """Sources first, then drain the queue, then the spool. Safe to call twice."""
        for source in self.sources.values():
            source.stop()
        with self._volumes_lock:
            volumes = list(self._volumes.values())
            self._volumes.clear()
        for volume in volumes:
            volume.stop()
        hub = self._files_hub[0]
        if hub is not None:
            hub.stop()
            hub.close()
        if self._health is not None:
            self._health.stop()
        if self.pipeline is not None and self.spool is not None:
            left = self.pipeline.stop(drain_s=DRAIN_S)
            if self.rules_updater is not None:
                self.rules_updater.stop()
            for courier in (self.shipper, self.heartbeat):
                if courier is not None:
                    courier.stop(timeout=2 * self.config.server.timeout_s)
            pending = [w.path for w in left if isinstance(w, FileWork)]
            reports = [dataclasses.asdict(w) for w in left if isinstance(w, QuarantineReport)]
            egress = [dataclasses.asdict(w) for w in left if isinstance(w, EgressWork)]
            try:
                self.spool.set_state(PENDING_KEY, pending)
                self.spool.set_state(REPORTS_KEY, reports)
                self.spool.set_state(EGRESS_KEY, egress)
                self._write_health()
                daemon = self.spool.get_state("daemon", {}) or {}
                self.spool.set_state("daemon", {**daemon, "running": False, "stopped_at": time.time()})
            except SpoolError as exc:
                log.error("could not record the shutdown in the spool (%s); %d queued file(s) not kept", exc, len(pending))
            else:
                if pending:
                    log.info("%d queued file(s) will be scanned at the next start", len(pending))
            self.spool.close()
        self.pipeline = None

    # Pieces ----------------------------------------------------------------

    def _rules_cache(self) -> str:
        """Compiled rulesets by content hash (agent/scanning/rulecache.py), in the agent's own bundle directory."""
        return os.path.join(self.config.rules.bundle_dir, "compiled")

    def _local_rule_files(self) -> dict[str, str]:
        """The local packs (``[rules] dir``, else the starter packs), used beside any bundle."""
        location = self.config.rules_location()
        if location is None:
            return {}
        if location != self.config.rules.dir:
            log.warning("rules directory %s does not exist; using the starter packs", self.config.rules.dir)
        if os.path.isdir(location):
            return rule_files(location)
        if os.path.splitext(location)[1].lower() in RULE_SUFFIXES:
            return {os.path.splitext(os.path.basename(location))[0]: location}
        return {}

    def _initial_rules(self, identity: Identity) -> tuple[Ruleset, Bundle | None, str]:
        """Local packs plus the last good bundle on disk (verified again); local alone if that fails."""
        local = self._local_rule_files()
        try:
            credentials = identity.current()
            stored = self._bundles.load(public_key_hex=credentials.signing_public_key, vendor=credentials.vendor)
            if stored is not None:
                bundle, etag = stored
                ruleset = compile_rule_files({**local, **self._bundles.unpack(bundle)}, source="local packs + bundle", cache_dir=self._rules_cache())
                self._bundles.prune(keep=bundle.version)
                return ruleset, bundle, etag
        except CredentialsError:
            pass
        except (BundleError, RuleError) as exc:
            self._ruleset_error = f"stored signature bundle not used: {exc}"
            log.error("%s", self._ruleset_error)
        if local:
            return compile_rule_files(local, source=self.config.rules.dir, cache_dir=self._rules_cache()), None, ""
        location = self.config.rules_location()
        if location is None:
            raise RuleError("rules not found and no starter packs installed", path=self.config.rules.dir)
        return load_rules(location, cache_dir=self._rules_cache()), None, ""

    def _install_bundle(self, bundle: Bundle, pack_files: dict[str, str]) -> None:
        """Compile local packs with the new bundle's packs and load its fingerprint indexes, then swap them in
        (one reference swap each; scans in flight finish with the ruleset they started with)."""
        ruleset = compile_rule_files(
            {**self._local_rule_files(), **pack_files}, source=f"local packs + bundle {bundle.version}", cache_dir=self._rules_cache()
        )
        assert self.scanner is not None and self.pipeline is not None and self.spool is not None
        self.scanner.ruleset = ruleset
        self.pipeline.context = dataclasses.replace(self.pipeline.context, ruleset_version=ruleset.version)
        self._ruleset_error = None
        self.spool.set_state("ruleset_version", ruleset.version)
        self.spool.set_state("fingerprints", _index_summary(ruleset))
        self.spool.set_state("bundle_version", bundle.version)
        # The download, the compile and the ruleset just dropped leave free heap that an idle agent keeps otherwise.
        release_free_heap()

    def _stored_device_policy(self, identity: Identity) -> PolicyStore:
        """The last device policy the collector gave (verified again): enforced from the start, offline too."""
        store = PolicyStore(self.config.rules.bundle_dir)
        try:
            credentials = identity.current()
            stored = store.load(public_key_hex=credentials.signing_public_key, vendor=credentials.vendor)
        except CredentialsError:
            return store
        except DevicePolicyError as exc:
            self.device_policy.note("stored", f"stored device policy not used: {exc}")
            log.error("stored device policy not used: %s", exc)
            return store
        if stored is not None:
            self.device_policy.replace(*stored)
            log.info("device policy version %d in force: %s", stored[0].version, stored[0].action)
        return store

    def _redecide_volumes(self) -> None:
        usb = self.sources.get("usb")
        if self.guard is not None and isinstance(usb, UsbSource):
            self.guard.redecide(usb.devices())

    def _volume_mounted(self, device: Device) -> None:
        if self.guard is not None and self.guard.is_blocked(device.mountpoint):
            return  # nothing on it can be opened, the agent included
        self._watch_volume(device)

    def _volume_gone(self, device: Device) -> None:
        if self.guard is not None:
            self.guard.forget(device)
        self._unwatch_volume(device)

    def _start_sources(self) -> None:
        config = self.config
        assert self.pipeline is not None
        emit = self.pipeline.submit
        # The vendor's staff work inside the customer's repositories: writes there are not leaks.
        exclude = [*config.files.exclude, *(f"{folder}/**" for folder in config.protected.folders)]
        self._files_hub = hub, backend = open_hub(config.files.backend)
        if hub is not None:
            self.supervisor.watch(hub, "fanotify")
            hub.start()
        files = FileSource(emit, config.files.watch, exclude=exclude, quiet_s=config.files.quiet_ms / 1000, hub=hub, backend=backend)
        self.sources["files"] = files
        if config.usb.enabled:
            if volume_control.SUPPORTED:
                denier = volume_control.OpenDenier()
                self.sources["usb-block"] = denier
                self.guard = DeviceGuard(self.device_policy, emit, denier, before_block=self._unwatch_volume, after_unblock=self._watch_volume)
            self.sources["usb"] = UsbSource(
                emit,
                RemovablePolicy(config.usb.removable_roots, probe=default_probe(config.usb.sysfs_root)),
                MountWatcher(interval=config.usb.poll_interval_ms / 1000),
                on_mount=self._volume_mounted,
                on_unmount=self._volume_gone,
                admit=self.guard.admit if self.guard is not None else None,
            )
        if config.clipboard.enabled:
            self._clipboard_enforce = ClipboardClearer(config.clipboard.on_match)
            self.sources.update(clipboard_sources(emit, config.clipboard, self._clipboard_enforce))
        if config.egress.enabled and (config.egress.git or config.egress.uploads):
            self._add_egress_sources(emit)
        for name, source in self.sources.items():
            if isinstance(source, StoppableThread):
                self.supervisor.watch(source, name)
            source.start()

    def _add_egress_sources(self, emit: Emit) -> None:
        """Process starts -> the egress tracker -> the pipeline; stopped in this order too (no new starts first)."""
        tracker = EgressTracker(self.config.egress, self.config.protected.folders, emit)
        self.sources["processes"] = ProcessEvents(tracker.on_exec)
        self.sources["egress"] = tracker

    def _enforce(self, work: Work, result: ScanResult) -> dict[str, Any] | None:
        """The pipeline's enforcement hook: the event's ``enforcement`` for matched work, by its kind."""
        if isinstance(work, FileWork) and work.channel == "usb" and self.quarantine is not None:
            return self.quarantine.enforce(work, result)
        if isinstance(work, ClipboardWork) and self._clipboard_enforce is not None:
            return self._clipboard_enforce(work, result)
        return None

    def _watch_volume(self, device: Device) -> None:
        """Every file written to a removable volume from now on is scanned as ``usb``."""
        assert self.pipeline is not None
        usb = self.config.usb
        # Not ``[files] exclude``: a .tmp or node_modules/ on a stick is as much a leak as any file.
        source = FileSource(
            self.pipeline.submit,
            [device.mountpoint],
            exclude=usb.exclude,
            quiet_s=self.config.files.quiet_ms / 1000,
            channel="usb",
            device=device,
            writes=WriteWatch(quiet_s=usb.writing_quiet_ms / 1000, interval_s=usb.writing_interval_ms / 1000),
            hub=self._files_hub[0],
            backend=self._files_hub[1],
        )
        with self._volumes_lock:
            old = self._volumes.pop(device.mountpoint, None)
            self._volumes[device.mountpoint] = source
        if old is not None:
            self.supervisor.forget(old)
            old.stop()
        self.supervisor.watch(source, f"usb:{device.mountpoint}")
        source.start()

    def _unwatch_volume(self, device: Device) -> None:
        with self._volumes_lock:
            source = self._volumes.pop(device.mountpoint, None)
        if source is not None:
            self.supervisor.forget(source)
            source.volume_removed()
            source.stop()

    def _client_for(self, credentials: Credentials) -> CollectorClient:
        server = self.config.server
        return CollectorClient(
            server.url or credentials.server_url,
            credential=credentials.credential,
            ca_file=server.ca_file or credentials.ca_file,
            client_cert=server.client_cert,
            client_key=server.client_key,
            timeout_s=server.timeout_s,
        )

    def _heartbeat_report(self) -> dict[str, Any]:
        assert self.spool is not None
        stats = self.spool.stats()
        sources: dict[str, Any] = {}
        for name, health in self.health().items():
            state = str(health.get("state", "ok"))
            # A thread that has died says how often and why (short: the collector takes 16 KiB of
            # health at most); every other entry stays a bare state.
            if len(sources) < HEARTBEAT_MAX_SOURCES:
                sources[_heartbeat_name(name)] = {"state": state, "deaths": health["deaths"], "last_error": health["last_error"][:200]} if "deaths" in health else state
        updater_error = self.rules_updater.error if self.rules_updater else None
        return {
            "agent_version": __version__,
            "ruleset_version": self.spool.get_state("ruleset_version"),
            "bundle_version": self.spool.get_state("bundle_version"),
            **self._fingerprint_report(),
            "ruleset_error": updater_error or self._ruleset_error,
            "spool_depth": stats["depth"],
            "dropped": stats["dropped_total"],
            "sources": sources,
        }

    def _fingerprint_report(self) -> dict[str, Any]:
        """The fingerprint indexes in force (published and local), as heartbeats carry them; nothing
        at all without any, so a collector that predates indexes still takes the heartbeat."""
        indexes = getattr(self.scanner.ruleset, "fingerprints", ()) if self.scanner is not None else ()
        if not indexes:
            return {}
        return {"fingerprints": [{"name": i.name, "version": i.version, "fingerprints": i.count} for i in indexes]}


    def health(self) -> dict[str, Any]:
        """Each source's and courier's health; a thread that has died also has ``deaths``,
        ``last_error`` and ``last_died_at``, and while it waits to restart (or was given up on)
        its state says so."""
        sources: dict[str, dict[str, Any]] = {name: dict(source.health()) for name, source in self.sources.items()}
        if self.shipper is not None:
            sources["shipper"] = dict(self.shipper.health())
        with self._volumes_lock:
            for mountpoint, volume in self._volumes.items():
                sources[f"usb:{mountpoint}"] = volume.health()
        if self.pipeline is not None:
            sources["pipeline"] = self.pipeline.health() | {"queue_depth": str(self.pipeline.depth())}
        for label, death in self.supervisor.health().items():
            entry = sources.setdefault(label, {"state": "ok", "message": "running"})
            if death["state"] != "ok":
                restart = "given up on" if death["state"] == "failed" else "restarting"
                entry.update(state=death["state"], message=f"thread died ({death['last_error']}); {restart}")
            entry.update(deaths=death["deaths"], last_error=death["last_error"], last_died_at=_iso(death["last_died_at"]))
        return sources

    def _write_health(self) -> None:
        """Record health when it changed (an idle daemon then writes nothing)."""
        if self.spool is None:
            return
        health = self.health()
        if health != self._last_health:
            self.spool.set_state("sources", health)
            self._last_health = health


class _HealthWriter(StoppableThread):
    """Records source health in the spool so ``dlp-agent status`` can show it."""

    def __init__(self, daemon: Daemon):
        super().__init__(name="health")
        self._daemon = daemon

    def run_loop(self) -> None:
        failing = False
        while not self.wait(HEALTH_INTERVAL_S):
            try:
                self._daemon._write_health()
                failing = False
            except SpoolError as exc:  # status is best effort (the pipeline reports a full disk)
                if not failing:
                    log.warning("cannot record health in the spool: %s", exc)
                failing = True


class _ProtectedIndexer(StoppableThread):
    """Builds the protected-file index off the start-up path and refreshes it periodically."""

    def __init__(self, scanner: Scanner, folders: list[str], exclude: list[str], refresh_s: float):
        super().__init__(name="protected-index")
        self._scanner = scanner
        self._folders = folders
        self._exclude = exclude
        self._refresh_s = refresh_s
        self._health = {"state": "ok", "message": "indexing"}

    def health(self) -> dict[str, str]:
        return self._health

    def run_loop(self) -> None:
        while True:
            started = time.monotonic()
            index = ProtectedIndex.build(self._folders, exclude=self._exclude, previous=self._scanner.protected)
            self._scanner.protected = index  # one reference swap: scans in flight keep the old index
            self._health = {
                "state": "ok",
                "message": f"{len(index)} distinct file(s) in {len(self._folders)} folder(s), indexed in {time.monotonic() - started:.1f}s",
            }
            if self.wait(self._refresh_s):
                return


def _egress_work(item: dict[str, Any]) -> EgressWork:
    """An EgressWork kept in the spool's state across a stop (JSON turned its tuples into lists)."""
    return EgressWork(**{**item, "refs": tuple(item.get("refs") or ()), "files": tuple(item.get("files") or ())})


def _heartbeat_name(name: str) -> str:
    """A source's name as the collector takes it (64 characters at most): a long mountpoint keeps
    its beginning and end, so the heartbeat of an agent with a stick deep in a tree is not refused."""
    if len(name) <= HEARTBEAT_NAME_CHARS:
        return name
    half = (HEARTBEAT_NAME_CHARS - 1) // 2
    return name[:half] + "…" + name[-(HEARTBEAT_NAME_CHARS - 1 - half) :]


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


def _lower_priority(nice: int) -> None:
    """Scanning is background work: yield the CPU to the user's applications."""
    if nice and hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError as exc:
            log.warning("cannot lower priority: %s", exc)


def _index_summary(ruleset: Ruleset) -> list[dict[str, Any]]:
    """The fingerprint indexes in force, for ``dlp-agent status``."""
    return [{"name": i.name, "version": i.version, "fingerprints": i.count, "files": len(i.files)} for i in ruleset.fingerprints]
