"""Secrets the collector hands out, and how it stores them (never in the clear).

Agent secrets and API tokens are 256-bit random values, so one SHA-256 is enough to make a
stolen database useless and keeps authentication cheap at thousands of heartbeats a minute;
human passwords are guessable and get argon2. A token carries its own lookup id
(``<kind>_<id>_<secret>``) so checking it is one primary-key read and a constant-time compare.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cachetools import TTLCache

AGENT_KIND = "dlpa"
USER_KIND = "dlpu"
ENROLL_KIND = "dlpe"
_KINDS = (AGENT_KIND, USER_KIND, ENROLL_KIND)
_MAX_TOKEN_LENGTH = 256

_password_hasher = PasswordHasher()


@dataclass(frozen=True)
class Token:
    kind: str
    id: str
    secret: str

    def __str__(self) -> str:
        return f"{self.kind}_{self.id}_{self.secret}"


def new_id() -> str:
    return secrets.token_hex(16)


def new_token(kind: str, token_id: str | None = None) -> Token:
    return Token(kind, token_id or new_id(), secrets.token_urlsafe(32))


def parse_token(value: str | None, kind: str) -> Token | None:
    """The token in ``value`` if it is well formed and of ``kind``; None otherwise."""
    if not value or len(value) > _MAX_TOKEN_LENGTH:
        return None
    parts = value.split("_", 2)
    if len(parts) != 3 or parts[0] != kind:
        return None
    token_kind, token_id, secret = parts
    if not token_id or not secret or not token_id.isalnum() or len(token_id) > 32:
        return None
    return Token(token_kind, token_id, secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


class ConfirmedTokens:
    """Tokens the database confirmed lately, held as their hashes, so a route can turn a stranger
    away before costly work (parsing a batch) without a database read on every call.

    Membership is never authorization: the route's own transaction still authenticates, and
    forgets a token it refuses. A token confirmed before its revocation stays here at most
    ``ttl_s``, and then only spares the database read, not the refusal.
    """

    def __init__(self, *, kind: str, maxsize: int = 65536, ttl_s: float = 300) -> None:
        self._kind = kind
        self._hashes: TTLCache[str, str] = TTLCache(maxsize=maxsize, ttl=ttl_s)
        self._lock = threading.Lock()

    def __contains__(self, value: str | None) -> bool:
        token = parse_token(value, self._kind)
        if token is None:
            return False
        with self._lock:
            stored = self._hashes.get(token.id)
        return stored is not None and secret_matches(token.secret, stored)

    def add(self, value: str | None) -> None:
        token = parse_token(value, self._kind)
        if token is not None:
            with self._lock:
                self._hashes[token.id] = hash_secret(token.secret)

    def discard(self, value: str | None) -> None:
        token = parse_token(value, self._kind)
        if token is not None:
            with self._lock:
                self._hashes.pop(token.id, None)


def new_password() -> str:
    return secrets.token_urlsafe(18)


def hash_password(password: str) -> str:
    return _password_hasher.hash(password)


def password_matches(password: str, stored_hash: str) -> bool:
    try:
        return _password_hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def dummy_password_check(password: str) -> None:
    """Spend the time a real check takes, so unknown user names are not told apart by timing."""
    password_matches(password, _dummy_hash())


@functools.cache
def _dummy_hash() -> str:
    return _password_hasher.hash(secrets.token_urlsafe(12))
