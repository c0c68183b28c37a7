"""The last good bundle on disk, so an agent restarted without its collector keeps its rules.

The bundle is kept as received (still signed) and verified again when loaded; its packs and
fingerprint indexes are unpacked beside it for the compiler, in ``packs-<version>``. A bundle
is verified as a stream from its file and each index is written to a scratch directory while
it is hashed, so an index of hundreds of megabytes is never held in memory; the scratch
directory becomes ``packs-<version>`` only once everything in it verified. Older
``packs-*`` directories are removed only after a newer version was installed (the running
ruleset maps its indexes from there). Writes go through a temporary name and a rename. The
directory is the agent's alone: 0700, its files 0600, whatever the umask (agent/private.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

from agent.atomic import write_atomically
from agent.bundle import INDEX_SUFFIX, Bundle, read_bundle
from agent.private import create_private_file, make_private_dir, tighten_file

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.tar.gz"
STATE_FILE = "bundle.json"
DOWNLOAD_FILE = ".download.tar.gz"
PACKS_DIR = "packs"
_SCRATCH_PREFIX = ".unpack-"


class BundleStore:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def load(self, *, public_key_hex: str, vendor: str | None) -> tuple[Bundle, str] | None:
        """The stored bundle and its ETag, verified again (its indexes in a scratch directory
        that ``unpack`` puts in place); None when there is none.

        Raises:
            BundleError: the stored bundle no longer verifies (tampered on disk).
        """
        path = os.path.join(self.directory, BUNDLE_FILE)
        if not os.path.exists(path):
            return None
        self._tighten()
        bundle = self.verify(path, public_key_hex=public_key_hex, vendor=vendor)
        try:
            with open(os.path.join(self.directory, STATE_FILE), encoding="utf-8") as handle:
                etag = str(json.load(handle).get("etag", ""))
        except (OSError, ValueError):
            etag = ""
        return bundle, etag

    def download_path(self) -> str:
        """Where a bundle being fetched is written (replaced by each fetch)."""
        make_private_dir(self.directory, tighten=True)
        return os.path.join(self.directory, DOWNLOAD_FILE)

    def verify(self, path: str, *, public_key_hex: str, vendor: str | None, newer_than: int = 0) -> Bundle:
        """Verify the bundle file ``path``; its indexes go to a fresh scratch directory, removed when refused.

        Raises:
            BundleError: see ``read_bundle``.
        """
        make_private_dir(self.directory, tighten=True)
        scratch = tempfile.mkdtemp(prefix=_SCRATCH_PREFIX, dir=self.directory)  # 0700
        try:
            return read_bundle(path, public_key_hex=public_key_hex, vendor=vendor, newer_than=newer_than, index_dir=scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    def discard(self, bundle: Bundle) -> None:
        """Forget a verified bundle that will not be installed (its scratch directory)."""
        if bundle.index_dir is not None:
            shutil.rmtree(bundle.index_dir, ignore_errors=True)

    def _tighten(self) -> None:
        """Modes of a bundle kept by an older agent under a looser umask (best effort: it may not be ours to change)."""
        try:
            make_private_dir(self.directory, tighten=True)
            for name in (BUNDLE_FILE, STATE_FILE):
                tighten_file(os.path.join(self.directory, name))
        except OSError as exc:
            log.warning("cannot make %s private (mode 0700, files 0600): %s", self.directory, exc.strerror)

    def save(self, source: bytes | str, bundle: Bundle, etag: str) -> None:
        """Keep ``source`` (the bundle's bytes, or the file it was downloaded to, which is moved) as the last good bundle."""
        make_private_dir(self.directory, tighten=True)
        target = os.path.join(self.directory, BUNDLE_FILE)
        if isinstance(source, bytes):
            write_atomically(target, source)
        else:
            tighten_file(source)
            os.replace(source, target)
        write_atomically(os.path.join(self.directory, STATE_FILE), json.dumps({"etag": etag, "version": bundle.version}).encode())

    def unpack(self, bundle: Bundle) -> dict[str, str]:
        """Write the packs beside the bundle's verified indexes for the compiler; returns namespace -> file
        (``.yar`` for packs, ``.fp`` for indexes)."""
        make_private_dir(self.directory, tighten=True)
        target = os.path.join(self.directory, f"{PACKS_DIR}-{bundle.version}")
        scratch = bundle.index_dir or tempfile.mkdtemp(prefix=_SCRATCH_PREFIX, dir=self.directory)  # 0700
        try:
            for name, body in bundle.packs.items():
                path = os.path.join(scratch, f"{name}.yar")
                create_private_file(path)
                with open(path, "wb") as handle:
                    handle.write(body)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(scratch, target)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        files = {name: os.path.join(target, f"{name}.yar") for name in bundle.packs}
        files.update({name: os.path.join(target, f"{name}{INDEX_SUFFIX}") for name in bundle.indexes})
        return files

    def remove_unpacked(self, version: int) -> None:
        """Take out ``packs-<version>`` of a bundle that was refused after unpacking (it did not compile)."""
        shutil.rmtree(os.path.join(self.directory, f"{PACKS_DIR}-{version}"), ignore_errors=True)

    def prune(self, *, keep: int) -> None:
        """Remove every unpacked version but ``keep``, and scratch left by an interrupted update.

        On Windows an index still mapped by a scan in flight cannot be deleted yet; it goes at the next prune.
        """
        try:
            entries = os.listdir(self.directory)
        except OSError:
            return
        for entry in entries:
            stale = (entry.startswith(f"{PACKS_DIR}-") and entry != f"{PACKS_DIR}-{keep}") or entry.startswith(_SCRATCH_PREFIX)
            if stale:
                shutil.rmtree(os.path.join(self.directory, entry), ignore_errors=True)
