"""The last good bundle on disk, so an agent restarted without its collector keeps its rules.

The bundle is kept as received (still signed) and verified again when loaded; its packs are
unpacked beside it for the compiler. Writes go through a temporary name and a rename.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from agent.atomic import write_atomically
from agent.bundle import Bundle, read_bundle

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
        with open(path, "rb") as handle:
            data = handle.read()
        bundle = read_bundle(data, public_key_hex=public_key_hex, vendor=vendor)
        try:
            with open(os.path.join(self.directory, STATE_FILE), encoding="utf-8") as handle:
                etag = str(json.load(handle).get("etag", ""))
        except (OSError, ValueError):
            etag = ""
        return bundle, etag

    def save(self, data: bytes, bundle: Bundle, etag: str) -> None:
        os.makedirs(self.directory, exist_ok=True)
        write_atomically(os.path.join(self.directory, BUNDLE_FILE), data)
        write_atomically(os.path.join(self.directory, STATE_FILE), json.dumps({"etag": etag, "version": bundle.version}).encode())

    def unpack(self, bundle: Bundle) -> dict[str, str]:
        """Write the packs for the compiler; returns namespace -> file."""
        os.makedirs(self.directory, exist_ok=True)
        target = os.path.join(self.directory, f"{PACKS_DIR}-{bundle.version}")
        scratch = tempfile.mkdtemp(prefix=".packs-", dir=self.directory)
        for name, body in bundle.packs.items():
            with open(os.path.join(scratch, f"{name}.yar"), "wb") as handle:
                handle.write(body)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(scratch, target)
        for entry in os.listdir(self.directory):
            if entry.startswith(f"{PACKS_DIR}-") and entry != os.path.basename(target):
                shutil.rmtree(os.path.join(self.directory, entry), ignore_errors=True)
        return {name: os.path.join(target, f"{name}.yar") for name in bundle.packs}
