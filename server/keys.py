"""The collector's keys: the Ed25519 signing key, the X25519 quarantine key and the marks and pseudonyms keys.

Rule bundles and device policies are signed with the signing key and agents receive its public
half at enrollment, so an agent can refuse rules that did not come from its collector. Private
parts never leave the data directory. ``dlp-server init`` creates them all (``create_keys``), so a
copy of the data directory made after it gives another collector over the same database the same
keys; one missing later (a directory from before) is created on first use.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey


def create_signing_key(path: Path) -> bool:
    """Write a new key to ``path`` (mode 0600) unless one exists; True when created."""
    if path.exists():
        return False
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return True


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 key")
    return key


def public_key_hex(key: Ed25519PrivateKey | X25519PrivateKey) -> str:
    """The raw public half, as agents are given it (the signing key's, the quarantine key's)."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


QUARANTINE_KEY_FILE = "quarantine.key"
"""The collector's X25519 key pair (beside ``signing.key``): agents encrypt quarantined files to its
public half; only this private half can derive the key that releases one. Collectors sharing a
database must share this file as they share the signing key."""


def quarantine_key(data_dir: Path) -> X25519PrivateKey:
    """The quarantine key in ``data_dir``, created (mode 0600) on first use."""
    path = data_dir / QUARANTINE_KEY_FILE
    if not path.exists():
        key = X25519PrivateKey.generate()
        if _write_once(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())):
            return key
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, X25519PrivateKey):
        raise ValueError(f"{path} does not hold an X25519 key")
    return loaded


def _write_once(path: Path, content: bytes) -> bool:
    """Write ``content`` to ``path`` (mode 0600) unless it exists by then; True when this call wrote it.

    Written whole under a temporary name and linked into place, so a collector process starting at
    the same moment reads either no key or a complete one, never half of one, and concurrent first
    uses agree on one key."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False  # another process linked its key first: use that one
    finally:
        os.unlink(temporary)


def _data_key(data_dir: Path, filename: str) -> bytes:
    """The 32-byte HMAC key in ``data_dir / filename``, created (mode 0600) on first use."""
    path = data_dir / filename
    if not path.exists():
        _write_once(path, os.urandom(32))
    key = path.read_bytes()
    if len(key) != 32:
        raise ValueError(f"{path} does not hold a 32-byte key")
    return key


MARKS_KEY_FILE = "marks.key"
"""32 random bytes (beside ``signing.key``): the HMAC key of mark payloads' digests in the database
(server/store/marks.py), so the database alone cannot tell which payload a mark has or forge a trace.
Collectors sharing a database must share this file."""


def marks_key(data_dir: Path) -> bytes:
    """The marks key in ``data_dir``, created (mode 0600) on first use."""
    return _data_key(data_dir, MARKS_KEY_FILE)


PSEUDONYMS_KEY_FILE = "pseudonyms.key"
"""32 random bytes (beside ``signing.key``): the HMAC key of the staff pseudonyms vendor leads see
(server/pseudonyms.py), so a pseudonym cannot be reversed by hashing a list of likely names.
Collectors sharing a database must share this file, or one lead would see two names for one person."""


def pseudonyms_key(data_dir: Path) -> bytes:
    """The pseudonyms key in ``data_dir``, created (mode 0600) on first use."""
    return _data_key(data_dir, PSEUDONYMS_KEY_FILE)


def create_keys(data_dir: Path, signing_key_path: Path) -> None:
    """Every key of the collector, each unless it exists: collectors sharing a database must share
    them all, and a key one collector made on first use would be unknown to the others."""
    create_signing_key(signing_key_path)
    quarantine_key(data_dir)
    marks_key(data_dir)
    pseudonyms_key(data_dir)
