"""Encoded copies inside content, decoded so that every rule sees the text they hold.

base64 and hex blobs, uuencode, quoted-printable, UTF-16/32 and rot13 turn code into
bytes no rule of the original text matches. Each finder first asks a question C code
answers at memory speed (``bytes.translate``/``find``/``count`` on the content or its
head) and parses in Python only when that says yes, so a plain source file costs a few
per cent of a YARA pass and is never scanned twice. A decoded part is kept only when it
looks like text or a container: random bytes are not worth a YARA call.
"""

from __future__ import annotations

import binascii
import dataclasses
import re
from collections.abc import Iterator

from agent.scanning.sniff import CONTAINERS, SNIFF_BYTES, sniff

MIN_BLOB_CHARS = 64
"""A base64 or hex blob shorter than this (newlines aside) is left alone: hashes and ids."""
_LINE_CHARS = 32
"""A blob's first line has at least this many alphabet characters (``xxd -p`` writes 60)."""
_HEAD = 64 * 1024
_MIN_DISTINCT = 10
"""A blob using fewer of the alphabet's characters than this, anywhere in it, encodes no text: hex of
any 200 bytes of code or prose uses 7 or more, base64 16 or more (measured on this repository and
its dependencies), and a whole blob of text uses far more. Counted over the whole blob, so padding
put before the code cannot hide it."""
_B64_CHARS = [bytes([char]) for char in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"]

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_MARKS = bytes(0x41 if b in _B64_ALPHABET else 0x20 for b in range(256))
_B64_RUN = b"A" * _LINE_CHARS
_B64_HALF_RUN = b"A" * (_LINE_CHARS // 2)
_BLOB = re.compile(rb"[A-Za-z0-9+/]{%d,}={0,2}(?:[ \t]*\r?\n[ \t]*[A-Za-z0-9+/]+={0,2})*" % _LINE_CHARS)
_HEX = frozenset(b"0123456789abcdefABCDEF")
_UU_BEGIN = re.compile(rb"begin [0-7]{3,4} [^\r\n]*\r?\n")  # no ^: a literal prefix is searched at C speed
_QP_HINT = re.compile(rb"=(?:\r?\n|3D|C[0-9A-F])")
# Not when a capital or underscore follows: ``Capabilities=CAP_SYS_ADMIN`` and ``MODE=EDIT`` are settings.
_QP_ESCAPE = re.compile(rb"=(?:[0-9][A-F]|[A-F][0-9A-F])(?![A-Z_])")
_QP_SOFT_BREAK = re.compile(rb"^[^\n]{72,75}=\r?$", re.M)
_ROT13 = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    b"NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm",
)
_ROT13_LETTERS = bytes(1 if chr(b) in "rgRG" else 2 if chr(b) in "etET" else 0 for b in range(256))
_EVERYDAY = (b"the ", b"return", b"self", b"import", b"function", b" and ")
_EVERYDAY_ROT13 = tuple(word.translate(_ROT13) for word in _EVERYDAY)
_CONTROL = bytes(range(0, 9)) + b"\x0b\x0e\x0f" + bytes(range(0x10, 0x20)) + b"\x7f"
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


@dataclasses.dataclass(frozen=True)
class Decoded:
    """Text found encoded at ``offset`` of the content it was decoded from."""

    kind: str
    offset: int
    data: bytes

    @property
    def name(self) -> str:
        """The member name the part's matches carry, such as ``base64@1024``."""
        return f"{self.kind}@{self.offset}"


def decoded_parts(content: bytes | memoryview) -> Iterator[Decoded]:
    """Every encoded part of ``content`` worth scanning, in order of discovery."""
    data = bytes(content) if isinstance(content, memoryview) else content
    head = data[:_HEAD]
    wide = _wide(data, head)
    if wide is not None:
        # Wide text has NULs between its letters: no other encoding can be seen until it is decoded.
        yield wide
        return
    if b"\0" in head:
        return  # binary: no text encoding in it worth the cost of looking
    yield from _blobs(data)
    yield from _uuencoded(data)
    qp = _quoted_printable(data)
    if qp is not None:
        yield qp
    if _looks_rot13(data):
        yield Decoded("rot13", 0, data.translate(_ROT13))


def looks_textual(data: bytes) -> bool:
    """Text (any ASCII-compatible encoding, or wide) or a container: worth a scan."""
    head = data[:4096]
    if not head:
        return False
    if sniff(data[:SNIFF_BYTES]) in CONTAINERS or _wide_codec(head) is not None:
        return True
    return len(head) - len(head.translate(None, _CONTROL)) <= len(head) // 20


def _blobs(data: bytes) -> Iterator[Decoded]:
    """base64 and hex blobs: runs of their alphabet, wrapped or not."""
    marks = data.translate(_B64_MARKS)
    # Half a run first: CPython finds 16 bytes far faster than 32 (measured: 1 us against 44 us per 33 KB).
    at = marks.find(_B64_HALF_RUN)
    if at < 0:
        return
    at = marks.find(_B64_RUN, at)
    # The letters counted after the runs: text always has ten of them, runs seldom (2 us a file spared).
    if at < 0 or not _varied(data):
        return  # no run a blob starts with, or too few letters in all the content for any blob to encode text
    # No blob starts before the first run of 32: the expression starts there, not at the top.
    for found in _BLOB.finditer(data, at):
        if not _varied(found.group()):
            continue  # a run of a few letters repeated (``xxxx``, ``AAAA``) encodes no text
        text = _unwrap(found.group())
        if len(text) < MIN_BLOB_CHARS:
            continue
        stripped = text.rstrip(b"=")
        try:
            if len(stripped) % 2 == 0 and _HEX.issuperset(stripped):
                decoded, kind = binascii.unhexlify(stripped), "hex"
            else:
                stripped = stripped[: len(stripped) - (len(stripped) % 4 == 1)]
                decoded, kind = binascii.a2b_base64(stripped + b"=" * (-len(stripped) % 4)), "base64"
        except binascii.Error:
            continue  # padding in the middle: not one blob after all
        if looks_textual(decoded):
            yield Decoded(kind, found.start(), decoded)


def _varied(blob: bytes) -> bool:
    """Whether ``blob`` holds at least ``_MIN_DISTINCT`` different alphabet characters: one
    ``memchr`` per character, stopping at the threshold, so a 1 MiB run costs about 2 ms."""
    seen = 0
    for char in _B64_CHARS:
        if char in blob:
            seen += 1
            if seen >= _MIN_DISTINCT:
                return True
    return False


def _unwrap(blob: bytes) -> bytes:
    """Join a wrapped blob's lines, stopping where the line width breaks (the blob ended)."""
    if b" " not in blob and b"\t" not in blob and b"\r" not in blob:
        # The usual shape (``base64``, ``xxd -p``): lines of one width, the last maybe shorter.
        # Checked and joined in C: a Python loop over the lines of a 1 MiB blob cost 6 ms.
        widths = set(map(len, blob.split(b"\n")[:-1]))
        last = blob.rsplit(b"\n", 1)[-1]
        if len(widths) == 1 and 0 < len(last) <= next(iter(widths)):
            return blob.replace(b"\n", b"")
    lines = [line.strip() for line in blob.split(b"\n")]
    width = max(len(line) for line in lines[:2])
    kept = [lines[0]]
    for line in lines[1:]:
        if not line or len(line) > width:
            break
        kept.append(line)
        if len(line) < width:
            break
    return b"".join(kept)


def _uuencoded(data: bytes) -> Iterator[Decoded]:
    """``uuencode`` output: a ``begin MODE NAME`` line, then lines of 4-for-3 characters."""
    for found in _UU_BEGIN.finditer(data):
        if found.start() and data[found.start() - 1] != 0x0A:
            continue
        out = bytearray()
        for line in data[found.end() :].split(b"\n"):
            line = line.rstrip(b"\r")
            if line in (b"`", b"", b"end"):
                break
            try:
                out += binascii.a2b_uu(line)
            except binascii.Error:
                break
        if out:
            yield Decoded("uu", found.start(), bytes(out))


def _quoted_printable(data: bytes) -> Decoded | None:
    """Quoted-printable (mail bodies), decoded whole.

    Told by what code rarely holds: escapes with a letter (``3D`` after ``=`` stands for
    every ``=``, ``C3`` for accents; ``limit=10`` and ``=CAP_SYS_ADMIN`` are not), or a soft line break ending
    a line of full width.
    """
    if _QP_HINT.search(data) is None:  # one regex pass: faster than four ``in`` on code full of "="
        return None
    lettered = 0
    for _ in _QP_ESCAPE.finditer(data):
        lettered += 1
        if lettered >= 2:
            break
    if lettered < 2 and _QP_SOFT_BREAK.search(data) is None:
        return None
    return Decoded("qp", 0, binascii.a2b_qp(data))


def _looks_rot13(data: bytes) -> bool:
    """Letters rotated by 13: ``e`` and ``t`` lead in English and in code, ``r`` and ``g`` after rot13;
    then, as random letters pass that test half the time, the rot13 of everyday words must
    outnumber those words."""
    head = data[:4096]
    # Both cases of r and g, then of e and t, as one byte each: two counts of a copy instead of
    # four of a lower-cased one (4 us a file spared; plain text mostly stops here).
    letters = head.translate(_ROT13_LETTERS)
    rotated = letters.count(1)
    plain = letters.count(2)
    # Measured on this repository's code and docs: plain text 0.2-0.83, rotated 1.2 and up.
    if rotated < 40 or rotated * 10 <= plain * 11:
        return False
    head = head.lower()
    # The rotated words first: plain text has almost none, so their count alone mostly decides.
    rotated_words = sum(head.count(word) for word in _EVERYDAY_ROT13)
    if rotated_words < 3:
        return False
    said = sum(head.count(word) for word in _EVERYDAY)
    return rotated_words > 2 * said


def _wide(data: bytes, head: bytes) -> Decoded | None:
    """UTF-16 or UTF-32 text, with a byte order mark or told by where its NULs fall."""
    codec = _wide_codec(head)
    if codec is None:
        return None
    text = data.decode(codec, errors="replace").lstrip("\ufeff")
    return Decoded(codec.replace("-", "").replace("utf", "utf-"), 0, text.encode("utf-8"))


def _wide_codec(head: bytes) -> str | None:
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec
    n = len(head) // 4 * 4
    if n < 16 or b"\0" not in head:
        return None
    quarter = n // 4
    zeros = [head[i:n:4].count(0) for i in range(4)]
    many, few = quarter * 9 // 10, quarter // 10
    if zeros[0] <= few and min(zeros[1:]) >= many:
        return "utf-32-le"
    if zeros[3] <= few and min(zeros[:3]) >= many:
        return "utf-32-be"
    if zeros[1] >= many and zeros[3] >= many and zeros[0] + zeros[2] <= 2 * few:
        return "utf-16-le"
    if zeros[0] >= many and zeros[2] >= many and zeros[1] + zeros[3] <= 2 * few:
        return "utf-16-be"
    return None
