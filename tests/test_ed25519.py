"""Ed25519 checks through hashlib's OpenSSL (agent/ed25519.py) give cryptography's answers, forgeries included."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import ed25519

# RFC 8032, section 7.1, TEST 1 (the empty message) and TEST 2.
RFC_VECTORS = [
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]
ORDER = 2**252 + 27742317777372353535851937790883648493
"""L, the order of the base point: a signature's S must be below it."""


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def cryptography_says(public_key: bytes, sig: bytes, message: bytes) -> bool:
    return ed25519._verify_with_cryptography(public_key, sig, message)


@pytest.fixture(params=["openssl", "cryptography"])
def checker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "cryptography":
        monkeypatch.setattr(ed25519, "_backend", lambda: None)
    return request.param


def test_this_machine_checks_through_openssl() -> None:
    lib = ed25519._backend()
    assert lib is not None
    key, signature, message = ed25519._SELF_TEST
    assert ed25519._verify_with(lib, key, signature, message)
    assert not ed25519._verify_with(lib, key, signature[:-1] + bytes([signature[-1] ^ 0x80]), message)


def test_a_library_failing_the_self_test_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # A library that loads but refuses every signature (as under a FIPS-only provider) falls back.
    monkeypatch.setattr(ed25519, "_verify_with", lambda lib, key, sig, message: False)
    assert ed25519._load_openssl() is None


def test_bytes_like_arguments_give_the_same_answer(checker: str) -> None:
    key_hex, message_hex, sig_hex = RFC_VECTORS[1]
    key, message, sig = bytes.fromhex(key_hex), bytes.fromhex(message_hex), bytes.fromhex(sig_hex)
    assert ed25519.verify(bytearray(key), memoryview(sig), bytearray(message))


@pytest.mark.parametrize("key_hex, message_hex, sig_hex", RFC_VECTORS)
def test_rfc_8032_vectors(checker: str, key_hex: str, message_hex: str, sig_hex: str) -> None:
    key, message, sig = bytes.fromhex(key_hex), bytes.fromhex(message_hex), bytes.fromhex(sig_hex)
    assert ed25519.verify(key, sig, message)
    assert not ed25519.verify(key, sig, message + b"\0")


def test_same_answers_as_cryptography_on_good_and_forged_signatures(checker: str) -> None:
    for round_ in range(200):
        private = Ed25519PrivateKey.generate()
        public = raw_public(private)
        message = os.urandom(round_ * 7)
        good = private.sign(message)
        flipped = bytearray(good)
        flipped[round_ % 64] ^= 1 << (round_ % 8)
        other = raw_public(Ed25519PrivateKey.generate())
        cases = [(public, good, message), (public, bytes(flipped), message), (other, good, message), (public, good, message + b"x")]
        assert [ed25519.verify(*case) for case in cases] == [cryptography_says(*case) for case in cases] == [True, False, False, False]


def test_malformed_keys_and_signatures_are_not_valid(checker: str) -> None:
    private = Ed25519PrivateKey.generate()
    public, sig = raw_public(private), private.sign(b"policy")
    s = int.from_bytes(sig[32:], "little")
    non_canonical = sig[:32] + (s + ORDER).to_bytes(32, "little")  # the same S mod L, which RFC 8032 refuses
    not_a_point = (2).to_bytes(32, "little")  # y = 2 has no x on the curve
    for case in [(public[:31], sig, b"policy"), (public, sig[:63], b"policy"), (public, non_canonical, b"policy"), (not_a_point, sig, b"policy"), (b"\0" * 32, b"\0" * 64, b"policy")]:
        assert ed25519.verify(*case) is False
        assert cryptography_says(*case) is False
