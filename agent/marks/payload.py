"""A mark's payload and its frame: what every carrier writes and reads.

A watermark payload is 6 random bytes the collector minted. Carriers write it as a 64-bit frame:
the payload and a CRC-16 over a fixed prefix and the payload, so a reader can tell a frame from
chance patterns (a Russian word among English ones, stray zero-width characters) before asking the
collector. The CRC only filters noise: what makes a trace trustworthy is that the collector finds
the payload's keyed digest among the marks it minted (48 random bits against a few thousand marks).

Canary secrets (``DLPC1-`` tokens, decoy cloud keys) are payloads too: their text, as bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal, get_args

PAYLOAD_BYTES = 6
FRAME_BYTES = PAYLOAD_BYTES + 2
FRAME_BITS = FRAME_BYTES * 8
_CRC_PREFIX = b"DLPM"

TOKEN_PREFIX = "DLPM1-"
TOKEN_RE = re.compile(r"DLPM1-([A-Z2-7]{13})")
"""A watermark frame written out as text: in document properties, a PDF's invisible text layer,
a code file's canary line. 13 base32 characters hold the 8-byte frame."""

CANARY_RE = re.compile(r"DLPC1-[A-Z2-7]{26}|AKIA[A-Z2-7]{16}")
"""Canary secrets a decoy carries (signatures/canary.py tokens; decoy cloud access key ids)."""

# Carriers: how a mark was found.
PROPERTY = "property"
ZERO_WIDTH = "zero_width"
HOMOGLYPH = "homoglyph"
TOKEN = "token"
CANARY = "canary"
COPY = "copy"
"""``copy``: the file is byte for byte a marked copy the collector wrote (only the collector knows these)."""
Carrier = Literal["property", "zero_width", "homoglyph", "token", "canary", "copy"]
CARRIERS: tuple[Carrier, ...] = get_args(Carrier)

MARK_ID_PATTERN = r"^mk_[0-9a-f]{16}$"
"""A registered mark's public name (``mk_`` and 16 hex digits): what events, traces and rules show."""


@dataclass(frozen=True)
class Found:
    """One payload found in a file by one carrier, and how many of its frames agreed."""

    carrier: str
    payload: bytes
    frames: int = 1


def _crc16(data: bytes) -> int:
    return binascii.crc_hqx(_CRC_PREFIX + data, 0xFFFF)


def frame(payload: bytes) -> bytes:
    """The 8 bytes a carrier writes for ``payload``."""
    if len(payload) != PAYLOAD_BYTES:
        raise ValueError(f"a watermark payload is {PAYLOAD_BYTES} bytes")
    return payload + _crc16(payload).to_bytes(2, "big")


def unframe(data: bytes) -> bytes | None:
    """The payload of an 8-byte frame, or None when its check fails (or it is all zeros: no mark)."""
    if len(data) != FRAME_BYTES:
        return None
    payload = data[:PAYLOAD_BYTES]
    if not any(payload) or int.from_bytes(data[PAYLOAD_BYTES:], "big") != _crc16(payload):
        return None
    return payload


def frame_bits(payload: bytes) -> list[int]:
    """The frame of ``payload`` as 64 bits, most significant first."""
    value = int.from_bytes(frame(payload), "big")
    return [(value >> (FRAME_BITS - 1 - i)) & 1 for i in range(FRAME_BITS)]


def unframe_bits(bits: list[int] | tuple[int, ...]) -> bytes | None:
    """``unframe`` for 64 bits read by a carrier."""
    if len(bits) != FRAME_BITS:
        return None
    value = 0
    for bit in bits:
        value = (value << 1) | (bit & 1)
    return unframe(value.to_bytes(FRAME_BYTES, "big"))


def token(payload: bytes) -> str:
    """``payload`` as a ``DLPM1-`` token."""
    return TOKEN_PREFIX + base64.b32encode(frame(payload)).decode("ascii").rstrip("=")


def read_tokens(text: str) -> list[Found]:
    """Every valid ``DLPM1-`` token in ``text`` (carrier ``token``), one Found per payload with its count."""
    counts: dict[bytes, int] = {}
    for match in TOKEN_RE.finditer(text):
        raw = base64.b32decode(match.group(1) + "===")
        payload = unframe(raw)
        if payload is not None:
            counts[payload] = counts.get(payload, 0) + 1
    return [Found(TOKEN, payload, count) for payload, count in counts.items()]


def read_canaries(text: str) -> list[Found]:
    """Every canary secret in ``text`` (carrier ``canary``); the collector decides which are real."""
    counts: dict[bytes, int] = {}
    for match in CANARY_RE.finditer(text):
        key = match.group(0).encode("ascii")
        counts[key] = counts.get(key, 0) + 1
    return [Found(CANARY, payload, count) for payload, count in counts.items()]


def as_property(found: list[Found]) -> list[Found]:
    """Tokens read from a document's properties or metadata: the ``property`` carrier, not a token in its text."""
    return [Found(PROPERTY, item.payload, item.frames) if item.carrier == TOKEN else item for item in found]


def merge(found: list[Found]) -> list[Found]:
    """One Found per (carrier, payload), frames added up."""
    total: dict[tuple[str, bytes], int] = {}
    for item in found:
        key = (item.carrier, item.payload)
        total[key] = total.get(key, 0) + item.frames
    return [Found(carrier, payload, frames) for (carrier, payload), frames in total.items()]


class Unmarkable(ValueError):
    """A file that cannot carry a mark: a format the marker does not write, or too little text for any carrier."""
