"""The scanner's cheap pre-checks (issue 20): each spares a pass over a file only where it proves the
pass would find nothing, so every encoded copy and every watermark token is still found."""

from __future__ import annotations

import base64
import binascii
import codecs
import os
import quopri
import random

import pytest

from agent.marks import payload as pl
from agent.marks import text as textmarks
from agent.scanning.cache import ResultCache
from agent.scanning.decode import decoded_parts
from agent.scanning.sniff import _PREFIXES, Kind, sniff
from tests.conftest import SECRET_WORD

PAYLOAD = bytes.fromhex("5a6b7c8d9e0f")
SOURCE = (f"def settle(batch):\n    key = '{SECRET_WORD}'\n    return sum(t.amount for t in batch) - len(key)\n" * 4).encode()


def _identifiers(lines: int, seed: int = 3) -> bytes:
    """Code whose camel-case names run 16 to 31 letters: the first pre-check (a run of 16 letters)
    passes on every line, so the second (a run of 32) decides, as on the benchmark's tree."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(8, 15))) for _ in range(200)]
    out = []
    for _ in range(lines):
        name = rng.choice(words) + rng.choice(words).capitalize()
        out.append(f"    {name}_x = {rng.choice(words)}({rng.choice(words)}, {rng.randint(0, 9999)})")
    return ("\n".join(out) + "\n").encode()


def _uu(data: bytes) -> bytes:
    lines = [b"begin 644 settle.py"] + [binascii.b2a_uu(data[i : i + 45]).rstrip(b"\n") for i in range(0, len(data), 45)]
    return b"\n".join([*lines, b"`", b"end"]) + b"\n"


HOST = _identifiers(400)
EMBEDDED = {
    "base64": (base64.encodebytes(SOURCE), "base64"),
    "hex": (b"\n".join(binascii.hexlify(SOURCE)[i : i + 60] for i in range(0, 2 * len(SOURCE), 60)) + b"\n", "hex"),
    "uu": (_uu(SOURCE), "uu"),
}


def test_plain_code_with_long_names_has_nothing_to_decode() -> None:
    assert list(decoded_parts(HOST)) == []


@pytest.mark.parametrize("encoding", sorted(EMBEDDED))
def test_a_copy_encoded_inside_code_with_long_names_is_decoded_at_its_offset(encoding: str) -> None:
    blob, kind = EMBEDDED[encoding]
    at = HOST.index(b"\n", len(HOST) // 2) + 1
    parts = list(decoded_parts(HOST[:at] + blob + b"\n" + HOST[at:]))  # a blank line ends it, as around any pasted blob
    assert [part.name for part in parts] == [f"{kind}@{at}"]
    assert SECRET_WORD.encode() in parts[0].data


def test_quoted_printable_and_rot13_of_such_code_are_decoded_whole() -> None:
    body = HOST[:3000] + SOURCE
    qp = quopri.encodestring(body.replace(b"    ", b"\t=") + b"x" * 80)
    assert [part.name for part in decoded_parts(qp)] == ["qp@0"]
    english = (b"the function returns the total and the fee, then the import of self is done and logged\n" * 40) + SOURCE
    rotated = codecs.encode(english.decode(), "rot13").encode()
    parts = list(decoded_parts(rotated))
    assert [part.name for part in parts] == ["rot13@0"] and SECRET_WORD.encode() in parts[0].data


def test_a_token_in_ascii_code_is_read(make_scanner) -> None:
    marked = HOST[:2000] + f"# ref: {pl.token(PAYLOAD)}\n".encode() + HOST[2000:]
    result = make_scanner().scan_bytes(marked, name="marked.py")
    assert {(m.kind, m.carrier, m.payload) for m in result.matches} == {("mark", pl.TOKEN, PAYLOAD.hex())}


def test_ascii_text_without_the_token_never_reaches_the_mark_reader(make_scanner, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    real = textmarks.might_carry
    monkeypatch.setattr(textmarks, "might_carry", lambda data: seen.append(data) or real(data))
    scanner = make_scanner()
    assert scanner.scan_bytes(HOST, name="no-dash.py").matches == ()  # no "-" at all: one memchr
    assert scanner.scan_bytes(HOST + b"total = a - b\n", name="dash.py").matches == ()  # a "-", no prefix
    assert seen == []
    scanner.scan_bytes(HOST + b"# DLPM1-\n", name="prefix.py")
    scanner.scan_bytes(HOST + "# caf\u00e9\n".encode(), name="accent.py")  # not ASCII: zero-width or look-alike letters
    assert len(seen) == 2


@pytest.mark.parametrize(("prefix", "kind"), _PREFIXES)
def test_every_container_is_still_sniffed(prefix: bytes, kind: Kind) -> None:
    assert sniff(prefix + bytes(600)) is kind


def test_text_sharing_a_containers_first_byte_or_holding_a_pdf_header_is_sniffed_as_before() -> None:
    assert sniff(b"PKG_VERSION = 1\n") is Kind.OTHER and sniff(b"BZ is not bzip2\n") is Kind.OTHER
    assert sniff(b"%!PS\n" + b"x" * 100 + b"%PDF-1.7\n") is Kind.PDF
    assert sniff(b"x\x9c" + bytes(20)) is Kind.OTHER


def test_the_result_cache_forgets_the_least_recently_used_entry() -> None:
    cache: ResultCache[str] = ResultCache(max_entries=2)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # now the most recent
    cache.put("c", "C")
    assert (cache.get("b"), cache.get("a"), cache.get("c"), len(cache)) == (None, "A", "C", 2)
    assert (cache.hits, cache.misses) == (3, 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_the_read_buffer_is_not_shared_with_a_forked_worker(make_scanner, tmp_path) -> None:
    """The buffer is mapped memory: a worker forked after the parent scanned must write its own copy."""
    scanner = make_scanner()
    (tmp_path / "parent.txt").write_bytes(b"p" * 4096)
    (tmp_path / "child.txt").write_bytes(b"c" * 4096)
    scanner.scan_path(str(tmp_path / "parent.txt"))
    pid = os.fork()
    if pid == 0:  # the child reads another file into the buffer it inherited
        scanner.scan_path(str(tmp_path / "child.txt"))
        os._exit(0 if bytes(scanner._buffer()[:4]) == b"cccc" else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert bytes(scanner._buffer()[:4]) == b"pppp"
