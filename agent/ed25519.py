"""Ed25519 signature checks (bundles, device policies) with the OpenSSL that hashlib already loaded.

cryptography costs a running agent about 10 MB of RSS (its Rust library's pages, for 6 MB of it)
from the first bundle or device policy it checks; an enrolled agent checks one within a minute
of starting, so that was part of every deployed agent's idle memory (issue 22). The
interpreter's ``_hashlib`` is linked against OpenSSL (1.1.1 or later, which has Ed25519), so its
``EVP_DigestVerify`` is reached through ctypes at no cost beyond a few objects. Where that
library cannot be reached (a Python whose hashlib is not linked to a shared OpenSSL, or
Windows, where a module's handle does not resolve its dependencies' symbols), cryptography
does the check, as before: the same answer, only the memory is lost.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_EVP_PKEY_ED25519 = 1087  # NID_ED25519, the same in OpenSSL 1.1.1 and 3.x

_SELF_TEST = (
    bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"),
    bytes.fromhex(
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
    ),
    b"\x72",
)
"""RFC 8032, section 7.1, TEST 2: key, signature, message. The library must accept it and refuse it
with one bit flipped before it is trusted: one that loads but cannot do Ed25519 (a FIPS-only
provider, another NID numbering) would otherwise refuse every bundle instead of falling back."""

_lock = threading.Lock()
_openssl: Any = None
_chosen = False


def _load_openssl() -> Any:
    """libcrypto's functions as ``_hashlib`` resolves them (dlsym on a module's handle searches what it links), or None."""
    try:
        import _hashlib

        lib = ctypes.CDLL(_hashlib.__file__)
        signatures = {
            "EVP_PKEY_new_raw_public_key": (ctypes.c_void_p, [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]),
            "EVP_PKEY_free": (None, [ctypes.c_void_p]),
            "EVP_MD_CTX_new": (ctypes.c_void_p, []),
            "EVP_MD_CTX_free": (None, [ctypes.c_void_p]),
            "EVP_DigestVerifyInit": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]),
            "EVP_DigestVerify": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]),
            "ERR_clear_error": (None, []),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = argtypes
    except (ImportError, OSError, AttributeError, TypeError) as exc:
        log.info("Ed25519 checks use cryptography (about 10 MB more memory): hashlib's OpenSSL is not reachable (%s)", exc)
        return None
    key, signature, message = _SELF_TEST
    forged = bytes([signature[0] ^ 1]) + signature[1:]
    if (_verify_with(lib, key, signature, message), _verify_with(lib, key, forged, message)) != (True, False):
        log.warning("Ed25519 checks use cryptography: hashlib's OpenSSL failed the RFC 8032 self-test")
        return None
    return lib


def _backend() -> Any:
    """OpenSSL through ctypes, or None for cryptography; chosen once."""
    global _openssl, _chosen
    with _lock:
        if not _chosen:
            _openssl = _load_openssl()
            _chosen = True
        return _openssl


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``message`` (RFC 8032, as OpenSSL checks it).

    A key or signature of the wrong length, or a key that is no curve point, is simply not a valid signature.
    """
    public_key, signature, message = bytes(public_key), bytes(signature), bytes(message)
    if len(public_key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    lib = _backend()
    if lib is None:
        return _verify_with_cryptography(public_key, signature, message)
    return _verify_with(lib, public_key, signature, message)


def _verify_with(lib: Any, public_key: bytes, signature: bytes, message: bytes) -> bool:
    """The check through OpenSSL; anything but 1 from either call is a refusal."""
    key = lib.EVP_PKEY_new_raw_public_key(_EVP_PKEY_ED25519, None, public_key, KEY_BYTES)
    if not key:
        lib.ERR_clear_error()
        return False
    context = lib.EVP_MD_CTX_new()
    try:
        if not context:
            raise MemoryError("EVP_MD_CTX_new failed")
        ok = lib.EVP_DigestVerifyInit(context, None, None, None, key) == 1 and lib.EVP_DigestVerify(context, signature, SIGNATURE_BYTES, message, len(message)) == 1
    finally:
        lib.EVP_MD_CTX_free(context)
        lib.EVP_PKEY_free(key)
    if not ok:
        # A failed check leaves its reason on this thread's OpenSSL error queue, where the ssl
        # module would later take it for the cause of one of its own errors.
        lib.ERR_clear_error()
    return ok


def _verify_with_cryptography(public_key: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
