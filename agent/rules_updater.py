"""Keeps the running ruleset current: polls for the collector's signed bundle and swaps it in.

The bundle is downloaded to a file beside the last good one (with fingerprint indexes it can
be hundreds of megabytes), verified as a stream, unpacked, compiled and swapped in. Anything
wrong with a new bundle (signature, hashes, vendor, an older version, a rule that does not
compile here, an index that does not load) leaves the last good ruleset running and is
reported in the heartbeat; the agent never scans with nothing because an update failed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from agent.bundle import MAX_BUNDLE_FILE_BYTES, Bundle, BundleError
from agent.bundle_store import BundleStore
from agent.credentials import Credentials, CredentialsError
from agent.identity import Link
from agent.scanning import RuleError
from agent.threads import StoppableThread
from agent.transport import CollectorClient

log = logging.getLogger(__name__)

MIN_COME_BACK_S = 5.0


class RulesUpdater(StoppableThread):
    def __init__(
        self,
        link: Link,
        store: BundleStore,
        install: Callable[[Bundle, dict[str, str]], None],
        *,
        interval_s: float,
        version: int = 0,
        etag: str = "",
    ) -> None:
        """``install(bundle, pack_files)`` compiles and swaps, raising RuleError when it cannot."""
        super().__init__(name="rules-updater")
        self._link = link
        self._store = store
        self._install = install
        self._interval_s = interval_s
        self.version = version
        self._etag = etag
        self.error: str | None = None
        self._come_back_s: float | None = None
        """Sooner than the interval: the collector said when (a bundle with indexes being built)."""

    def run_loop(self) -> None:
        while not self.stopping:
            self._come_back_s = None
            try:
                self.check_once(*self._link.current())
            except CredentialsError:
                pass  # not enrolled: local packs only, and the shipper already says why
            if self.wait(min(self._interval_s, max(MIN_COME_BACK_S, self._come_back_s or self._interval_s))):
                break
        self._link.close()

    def check_once(self, client: CollectorClient, credentials: Credentials) -> bool:
        """Fetch, verify and install a newer bundle; True when one was installed."""
        try:
            download = self._store.download_path()
            reply = client.get_signatures(self._etag, max_bytes=MAX_BUNDLE_FILE_BYTES, sink=download)
        except OSError as exc:
            self._fail(f"signature bundle not fetched: cannot write {self._store.directory}: {exc.strerror}")
            return False
        if reply.kind in ("unchanged", "none"):
            return False
        if reply.kind == "too_large":
            self._fail(f"signature bundle refused: {reply.detail}")
            return False
        if reply.kind != "ok":
            log.debug("signatures not fetched: %s", reply.detail)
            self._come_back_s = reply.retry_after
            return False
        bundle: Bundle | None = None
        try:
            bundle = self._store.verify(download, public_key_hex=credentials.signing_public_key, vendor=credentials.vendor, newer_than=self.version)
            if bundle.version == self.version:
                self._store.discard(bundle)
                _remove(download)
                self._etag = reply.etag
                return False
            files = self._store.unpack(bundle)
            try:
                self._install(bundle, files)
            except BaseException:
                self._store.remove_unpacked(bundle.version)
                raise
        except (BundleError, RuleError) as exc:
            _remove(download)
            self._fail(f"signature bundle refused: {exc}")
            return False
        except OSError as exc:
            _remove(download)
            if bundle is not None:
                self._store.discard(bundle)
            self._fail(f"signature bundle not installed: cannot write {self._store.directory}: {exc.strerror}")
            return False
        try:
            self._store.save(download, bundle, reply.etag)
        except OSError as exc:
            log.error("bundle %d runs but could not be kept for the next start: %s", bundle.version, exc.strerror)
        self._store.prune(keep=bundle.version)
        self.version, self._etag, self.error = bundle.version, reply.etag, None
        log.warning("signature bundle version %d installed (%d pack(s), %d fingerprint index(es))", bundle.version, len(bundle.packs), len(bundle.indexes))
        return True

    def _fail(self, message: str) -> None:
        if message != self.error:
            log.error("%s; keeping the rules in force", message)
        self.error = message


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
