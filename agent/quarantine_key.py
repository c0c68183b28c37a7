"""The key of one quarantined file, derived the same way by the agent that seals it and the collector that releases it.

The agent seals each file under HKDF-SHA256 of an X25519 secret shared between a fresh ephemeral key and the
collector's quarantine key, bound to the file's id (docs/device-control.md). The agent then forgets the
ephemeral private key, so only the collector, holding the other private key, can derive it again.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INFO_PREFIX = b"dlp-quarantine-v1:"


def data_key(private_key: X25519PrivateKey, public_key_hex: str, quarantine_id: str) -> bytes:
    """The file's AES-256 key from either side's private key and the other side's public key (hex, raw 32 bytes)."""
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO_PREFIX + quarantine_id.encode("ascii")).derive(shared)
