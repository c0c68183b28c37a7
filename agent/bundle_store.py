"""The last good bundle on disk, so an agent restarted without its collector keeps its rules.

The bundle is kept as received (still signed) and verified again when loaded; its packs are
unpacked beside it for the compiler. Writes go through a temporary name and a rename. The
directory is the agent's alone: 0700, its files 0600, whatever the umask (agent/private.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

from agent.atomic import write_atomically
from agent.bundle import MAX_BUNDLE_BYTES, Bundle, BundleError, read_bundle
from agent.private import create_private_file, make_private_dir, tighten_file

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.tar.gz"
STATE_FILE = "bundle.json"
PACKS_DIR = "packs"


class BundleStore:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def load(self, *, public_key_hex: str, vendor: str | None) -> tuple[Bundle, str] | None:
        """The stored bundle and its ETag, verified again; None when there is none.

        Raises:
            BundleError: the stored bundle no longer verifies (tampered on disk).
        """
        path = os.path.join(self.directory, BUNDLE_FILE)
        if not os.path.exists(path):
            return None
        self._tighten()
        with open(path, "rb") as handle:
            data = handle.read(MAX_BUNDLE_BYTES + 1)
        if len(data) > MAX_BUNDLE_BYTES:
            raise BundleError(f"stored bundle {path} is larger than {MAX_BUNDLE_BYTES} bytes")
        bundle = read_bundle(data, public_key_hex=public_key_hex, vendor=vendor)
        try:
            with open(os.path.join(self.directory, STATE_FILE), encoding="utf-8") as handle:
                etag = str(json.load(handle).get("etag", ""))
        except (OSError, ValueError):
            etag = ""
        return bundle, etag

    def _tighten(self) -> None:
        """Modes of a bundle kept by an older agent under a looser umask (best effort: it may not be ours to change)."""
        try:
            make_private_dir(self.directory, tighten=True)
            for name in (BUNDLE_FILE, STATE_FILE):
                tighten_file(os.path.join(self.directory, name))
        except OSError as exc:
            log.warning("cannot make %s private (mode 0700, files 0600): %s", self.directory, exc.strerror)

    def save(self, data: bytes, bundle: Bundle, etag: str) -> None:
        make_private_dir(self.directory, tighten=True)
        write_atomically(os.path.join(self.directory, BUNDLE_FILE), data)
        write_atomically(os.path.join(self.directory, STATE_FILE), json.dumps({"etag": etag, "version": bundle.version}).encode())

    def unpack(self, bundle: Bundle) -> dict[str, str]:
        """Write the packs for the compiler; returns namespace -> file."""
        make_private_dir(self.directory, tighten=True)
        target = os.path.join(self.directory, f"{PACKS_DIR}-{bundle.version}")
        scratch = tempfile.mkdtemp(prefix=".packs-", dir=self.directory)  # 0700
        for name, body in bundle.packs.items():
            path = os.path.join(scratch, f"{name}.yar")
            create_private_file(path)
            with open(path, "wb") as handle:
                handle.write(body)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(scratch, target)
        for entry in os.listdir(self.directory):
            if entry.startswith(f"{PACKS_DIR}-") and entry != os.path.basename(target):
                shutil.rmtree(os.path.join(self.directory, entry), ignore_errors=True)
        return {name: os.path.join(target, f"{name}.yar") for name in bundle.packs}
