"""Canary tokens: random markers admins plant in documents and repositories.

Format: ``DLPC1-`` followed by the RFC 4648 base32 (no padding) of 16 random
bytes, 26 characters of ``A-Z2-7``. The ``canary_token`` rule in packs/canary.yar
matches it. The security team keeps its own register of which token went where.
"""

from __future__ import annotations

import base64
import re
import secrets

PREFIX = "DLPC1-"
TOKEN_PATTERN = re.compile(r"DLPC1-[A-Z2-7]{26}")


def new_token() -> str:
    """A fresh, unguessable canary token."""
    return PREFIX + base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=")
