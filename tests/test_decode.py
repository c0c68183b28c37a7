"""Encoded copies (issue 14, item 4): every encoding a shell makes in one command is decoded and scanned."""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.scanning import ScanLimits, Status
from agent.scanning.decode import decoded_parts
from tests.conftest import SECRET_WORD

ROOT = Path(__file__).resolve().parent.parent
SOURCE = (
    "import hashlib\n"
    "from decimal import Decimal\n\n\n"
    "class Settlement:\n"
    '    """Settles a batch of trades against the ledger, then reports the totals to treasury."""\n\n'
    "    def __init__(self, ledger, rate=Decimal('0.0125')):\n"
    "        self.ledger = ledger\n"
    "        self.rate = rate\n"
    f"        self.key = '{SECRET_WORD}'\n\n"
    "    def settle(self, batch):\n"
    "        total = sum(trade.amount for trade in batch if trade.status == 'open')\n"
    "        fee = (total * self.rate).quantize(Decimal('0.01'))\n"
    "        digest = hashlib.sha256(repr(batch).encode()).hexdigest()\n"
    "        self.ledger.record(batch=batch, total=total, fee=fee, digest=digest, note='settled after the treasury cut-off time')\n"
    "        return total - fee\n"
).encode()
WRAPPED = SOURCE.replace(SECRET_WORD.encode(), b"placeholder") + b"# " + b"x" * 62 + b" " + SECRET_WORD.encode() + b"\n"
"""quoted-printable leaves short lines as they are: here a soft line break cuts the word."""


def tool(*argv: str, data: bytes) -> bytes:
    """Run a real encoder as an employee would, ``data`` on its standard input."""
    if shutil.which(argv[0]) is None and argv[0] != sys.executable:
        pytest.fail(f"{argv[0]} is not installed (make apt)")
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


ENCODINGS = {
    "base64": (lambda: tool("base64", data=SOURCE), "base64@0"),
    "base64 -w0": (lambda: tool("base64", "-w0", data=SOURCE), "base64@0"),
    "xxd -p": (lambda: tool("xxd", "-p", data=SOURCE), "hex@0"),
    "uuencode": (lambda: tool("uuencode", "settle.py", data=SOURCE), "uu@0"),
    "uuencode -m": (lambda: tool("uuencode", "-m", "settle.py", data=SOURCE), "base64@"),
    "quoted-printable": (lambda: tool(sys.executable, "-m", "quopri", data=WRAPPED), "qp@0"),
    "iconv UTF-16 (BOM)": (lambda: tool("iconv", "-f", "UTF-8", "-t", "UTF-16", data=SOURCE), "utf-16le@0"),
    "iconv UTF-16LE": (lambda: tool("iconv", "-f", "UTF-8", "-t", "UTF-16LE", data=SOURCE), "utf-16le@0"),
    "iconv UTF-16BE": (lambda: tool("iconv", "-f", "UTF-8", "-t", "UTF-16BE", data=SOURCE), "utf-16be@0"),
    "iconv UTF-32 (BOM)": (lambda: tool("iconv", "-f", "UTF-8", "-t", "UTF-32", data=SOURCE), "utf-32le@0"),
    "iconv UTF-32BE": (lambda: tool("iconv", "-f", "UTF-8", "-t", "UTF-32BE", data=SOURCE), "utf-32be@0"),
    "rot13 (tr)": (lambda: tool("tr", "A-Za-z", "N-ZA-Mn-za-m", data=SOURCE), "rot13@0"),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_encoded_copy_matches_and_says_how_it_was_decoded(scanner, tmp_path: Path, encoding: str) -> None:
    make, member = ENCODINGS[encoding]
    encoded = make()
    assert SECRET_WORD.encode() not in encoded
    path = tmp_path / "notes.txt"
    path.write_bytes(encoded)
    result = scanner.scan_path(str(path))
    assert result.status is Status.MATCH, result
    assert [m.member for m in result.matches if m.member and m.member.startswith(member)], result.matches


def test_blob_inside_a_file_is_reported_at_its_offset(scanner, tmp_path: Path) -> None:
    blob = tool("base64", "-w0", data=SOURCE)
    prefix = b"# config\nname = 'payments'\npayload = \""
    path = tmp_path / "settings.py"
    path.write_bytes(prefix + blob + b'"\n')
    result = scanner.scan_path(str(path))
    assert [m.member for m in result.matches] == [f"base64@{len(prefix)}"]


@pytest.mark.parametrize("encoder", [("base64",), ("xxd", "-p")])
def test_padding_before_the_code_does_not_hide_it(scanner, tmp_path: Path, encoder: tuple[str, ...]) -> None:
    """Blobs of a few repeated letters are not decoded (they encode no text); that is judged on the whole blob."""
    padded = tmp_path / "padded.txt"
    padded.write_bytes(tool(*encoder, data=b"#" * 3000 + b"\n" + SOURCE))
    assert scanner.scan_path(str(padded)).status is Status.MATCH
    assert list(decoded_parts((b"x" * 63 + b"\n") * 4096)) == [] and list(decoded_parts(b"A" * 4096)) == []


def test_encoded_member_of_an_archive_names_both(scanner, tmp_path: Path) -> None:
    encoded = tool("xxd", "-p", data=SOURCE)
    (tmp_path / "dump.hex").write_bytes(encoded)
    subprocess.run(["tar", "czf", "out.tgz", "dump.hex"], cwd=tmp_path, check=True)
    result = scanner.scan_path(str(tmp_path / "out.tgz"))
    assert [m.member for m in result.matches] == ["dump.hex!hex@0"]


def test_encodings_nest_within_the_depth_limit(scanner, tmp_path: Path) -> None:
    twice = tool("base64", data=tool("iconv", "-f", "UTF-8", "-t", "UTF-16", data=SOURCE))
    path = tmp_path / "twice.txt"
    path.write_bytes(twice)
    assert [m.member for m in scanner.scan_path(str(path)).matches] == ["base64@0!utf-16le@0"]


def test_base64_of_an_archive_is_opened(scanner, tmp_path: Path) -> None:
    (tmp_path / "settle.py").write_bytes(SOURCE)
    subprocess.run(["zip", "-q", "src.zip", "settle.py"], cwd=tmp_path, check=True) if shutil.which("zip") else (
        __import__("zipfile").ZipFile(tmp_path / "src.zip", "w").write(tmp_path / "settle.py", "settle.py")
    )
    path = tmp_path / "mail.txt"
    path.write_bytes(b"Content-Transfer-Encoding: base64\n\n" + tool("base64", data=(tmp_path / "src.zip").read_bytes()))
    assert [m.member for m in scanner.scan_path(str(path)).matches] == ["base64@35!settle.py"]


def test_plain_files_yield_nothing_to_decode() -> None:
    """The decode passes must not scan an ordinary source file a second time."""
    paths = [p for top in ("agent", "server", "signatures", "bench") for p in glob.glob(str(ROOT / top / "**" / "*.py"), recursive=True)]
    paths += glob.glob(str(ROOT / "docs" / "*.md"))
    assert len(paths) > 100
    decoded = {p: [d.name for d in decoded_parts(Path(p).read_bytes())] for p in paths}
    assert {p: names for p, names in decoded.items() if names} == {}


def test_random_base64_noise_is_not_scanned() -> None:
    noise = tool("base64", data=bytes(range(256)) * 8)
    assert list(decoded_parts(noise)) == []


def test_decoded_parts_count_against_the_budget(make_scanner, tmp_path: Path) -> None:
    blob = tool("base64", "-w0", data=SOURCE)
    path = tmp_path / "many.txt"
    path.write_bytes(b"\n".join(b"part%d = %s" % (i, blob) for i in range(6)))
    result = make_scanner(limits=ScanLimits(max_members=3)).scan_path(str(path))
    assert "more than 3 archive members" in (result.reason or "")


def test_blob_past_the_first_chunk_of_a_large_file_is_found_at_its_offset(make_scanner, tmp_path: Path) -> None:
    filler = b"".join(b"line %06d of an ordinary log, nothing encoded here\n" % i for i in range(12_000))
    blob = tool("base64", data=SOURCE)
    path = tmp_path / "big.log"
    path.write_bytes(filler + blob + filler[:1000])
    limits = ScanLimits(chunk_bytes=256 * 1024, overlap_bytes=4096)
    result = make_scanner(limits=limits).scan_path(str(path))
    assert {m.member for m in result.matches} == {f"base64@{len(filler)}"}


def test_settings_spelled_in_capitals_are_not_quoted_printable() -> None:
    unit = b"[Service]\nAmbientCapabilities=CAP_DAC_READ_SEARCH CAP_SYS_ADMIN\nCapabilityBoundingSet=CAP_DAC_READ_SEARCH\nMODE=EDIT\n"
    assert [d.name for d in decoded_parts(unit)] == []
    mail = b"Subject: caf=C3=A9\n\nLe caf=C3=A9 de l'=C3=A9cole: =3D 5\n"
    assert [d.name for d in decoded_parts(mail)] == ["qp@0"]
