"""Archives and documents: members by path, text of office files and PDFs, and every limit."""

from __future__ import annotations

import bz2
import lzma
import random
from pathlib import Path

import pytest

from agent.scanning import ScanLimits, Status
from tests import factories
from tests.conftest import SECRET_WORD

WORD = SECRET_WORD.encode()
CODE = b"def settle(batch):\n    key = '" + WORD + b"'\n"


def scan_file(scanner, tmp_path: Path, name: str, data: bytes):
    f = tmp_path / name
    f.write_bytes(data)
    return scanner.scan_path(str(f))


def members_of(result) -> set[str | None]:
    return {m.member for m in result.matches}


def test_zip_member_reported_by_path(scanner, tmp_path: Path) -> None:
    data = factories.zip_bytes({"README.md": b"hello", "src/core.py": CODE})
    result = scan_file(scanner, tmp_path, "bundle.zip", data)
    assert result.status is Status.MATCH
    assert members_of(result) == {"src/core.py"}


def test_extension_does_not_matter(scanner, tmp_path: Path) -> None:
    data = factories.zip_bytes({"src/core.py": CODE})
    assert members_of(scan_file(scanner, tmp_path, "holiday.jpg", data)) == {"src/core.py"}


def test_nested_archives(scanner, tmp_path: Path) -> None:
    inner = factories.tar_bytes({"app/core.py": CODE}, mode="w:gz")
    jar = factories.zip_bytes({"lib/inner.tar.gz": inner, "META-INF/MANIFEST.MF": b"Manifest-Version: 1.0"})
    result = scan_file(scanner, tmp_path, "release.jar", factories.zip_bytes({"deps/app.jar": jar}))
    assert members_of(result) == {"deps/app.jar!lib/inner.tar.gz!app/core.py"}


@pytest.mark.parametrize(
    "name, data, member",
    [
        ("src.tar", factories.tar_bytes({"src/core.py": CODE}), "src/core.py"),
        ("src.tgz", factories.tar_bytes({"src/core.py": CODE}, mode="w:gz"), "src/core.py"),
        ("src.tar.bz2", factories.tar_bytes({"src/core.py": CODE}, mode="w:bz2"), "src/core.py"),
        ("src.tar.xz", factories.tar_bytes({"src/core.py": CODE}, mode="w:xz"), "src/core.py"),
        ("core.py.gz", factories.gzip_bytes(CODE, name="core.py"), "core.py"),
        ("core.py.bz2", bz2.compress(CODE), "data"),
        ("core.py.xz", lzma.compress(CODE), "data"),
    ],
)
def test_tar_and_compressed_streams(scanner, tmp_path: Path, name: str, data: bytes, member: str) -> None:
    result = scan_file(scanner, tmp_path, name, data)
    assert result.status is Status.MATCH
    assert member in members_of(result)


def test_docx_text_is_scanned_across_runs(make_scanner, tmp_path: Path) -> None:
    scanner = make_scanner()
    # Word splits the marking into runs; only the extracted text holds it whole.
    data = factories.docx_bytes([["Quarterly plan"], ["PROPRIETARY AND ", "CONFIDEN", "TIAL"]])
    result = scan_file(scanner, tmp_path, "plan.docx", data)
    assert result.status is Status.MATCH
    assert [(m.rule, m.member) for m in result.matches] == [("marking", "word/document.xml")]


@pytest.mark.parametrize(
    "name, data, member",
    [
        ("sheet.xlsx", factories.xlsx_bytes(["Revenue", factories.MARKING]), "xl/sharedStrings.xml"),
        ("deck.pptx", factories.pptx_bytes(["Roadmap", factories.MARKING]), "ppt/slides/slide1.xml"),
        ("memo.odt", factories.odt_bytes(["Memo", factories.MARKING]), "content.xml"),
    ],
)
def test_office_formats(scanner, tmp_path: Path, name: str, data: bytes, member: str) -> None:
    result = scan_file(scanner, tmp_path, name, data)
    assert [(m.rule, m.member) for m in result.matches] == [("marking", member)]


def test_pdf_text(scanner, tmp_path: Path) -> None:
    data = factories.pdf_bytes(["Board pack", factories.MARKING])
    assert factories.MARKING.encode() not in data  # the text stream is compressed
    result = scan_file(scanner, tmp_path, "board.pdf", data)
    assert [(m.rule, m.member) for m in result.matches] == [("marking", "text")]


def test_encrypted_zip(scanner, tmp_path: Path) -> None:
    data = factories.encrypted_zip_bytes({"src/core.py": CODE})
    result = scan_file(scanner, tmp_path, "locked.zip", data)
    assert result.status is Status.ENCRYPTED
    assert "src/core.py" in result.reason


def test_encrypted_pdf(scanner, tmp_path: Path) -> None:
    data = factories.pdf_bytes([factories.MARKING], user_password="hunter2")
    result = scan_file(scanner, tmp_path, "locked.pdf", data)
    assert result.status is Status.ENCRYPTED


def test_password_protected_office_file(scanner, tmp_path: Path) -> None:
    # Encrypted .docx files are OLE compound files holding an EncryptionInfo stream.
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + "EncryptionInfo".encode("utf-16-le") + bytes(512)
    assert scan_file(scanner, tmp_path, "locked.docx", ole).status is Status.ENCRYPTED


def test_match_wins_over_limits_but_keeps_the_reason(scanner, tmp_path: Path) -> None:
    data = factories.zip_bytes({"src/core.py": CODE, "locked.zip": factories.encrypted_zip_bytes({"a": b"b"})})
    result = scan_file(scanner, tmp_path, "mixed.zip", data)
    assert result.status is Status.MATCH
    assert "encrypted" in result.reason


@pytest.mark.parametrize(
    "name, data",
    [
        ("report.docx", factories.docx_bytes([["hello"]])[:-40]),
        ("report.pdf", factories.pdf_bytes(["hello"])[:300]),
        ("src.tar.gz", factories.tar_bytes({"a.py": random.Random(1).randbytes(10000)}, mode="w:gz")[:2000]),
    ],
)
def test_corrupt_containers_are_unreadable(scanner, tmp_path: Path, name: str, data: bytes) -> None:
    result = scan_file(scanner, tmp_path, name, data)
    assert result.status is Status.UNREADABLE, result
    assert result.reason


def test_unsupported_archive_is_not_called_clean(scanner, tmp_path: Path) -> None:
    result = scan_file(scanner, tmp_path, "src.rar", b"Rar!\x1a\x07\x00" + bytes(100))
    assert result.status is Status.SKIPPED and result.uninspected
    assert "rar" in result.reason


def test_corrupt_7z_is_unreadable(scanner, tmp_path: Path) -> None:
    result = scan_file(scanner, tmp_path, "src.7z", b"7z\xbc\xaf\x27\x1c" + bytes(100))
    assert result.status is Status.UNREADABLE
    assert "7z" in result.reason


def test_zip_bomb_stops_at_the_ratio(scanner, tmp_path: Path) -> None:
    bomb = factories.zeros_zip_bytes(200 * 1024 * 1024)
    assert len(bomb) < 400 * 1024
    result = scan_file(scanner, tmp_path, "bomb.zip", bomb)
    assert result.status is Status.TOO_LARGE
    assert "ratio" in result.reason


def test_nested_bomb_stops_at_the_total(make_scanner, tmp_path: Path) -> None:
    # Each level holds ten copies of the one below: 10^3 members of 4 MiB of text-like data.
    leaf = factories.zip_bytes({"part.txt": b"abcdefgh" * (512 * 1024)})
    level = leaf
    for _ in range(3):
        level = factories.zip_bytes({f"copy{i}.zip": level for i in range(10)})
    limits = ScanLimits(max_extracted_bytes=64 * 1024 * 1024)
    result = scan_file(make_scanner(limits=limits), tmp_path, "42.zip", level)
    assert result.status is Status.TOO_LARGE
    assert "extracted" in result.reason or "ratio" in result.reason


def test_member_count_limit(make_scanner, tmp_path: Path) -> None:
    data = factories.zip_bytes({f"f{i}.txt": b"x" for i in range(30)})
    result = scan_file(make_scanner(limits=ScanLimits(max_members=10)), tmp_path, "many.zip", data)
    assert result.status is Status.TOO_LARGE
    assert "members" in result.reason


def test_depth_limit(make_scanner, tmp_path: Path) -> None:
    data = factories.nested_zip_bytes(6, {"src/core.py": CODE})
    result = scan_file(make_scanner(limits=ScanLimits(max_depth=3)), tmp_path, "deep.zip", data)
    assert result.status is Status.SKIPPED
    assert "nested deeper than 3" in result.reason
    within = scan_file(make_scanner(limits=ScanLimits(max_depth=6)), tmp_path, "deep2.zip", data)
    assert within.status is Status.MATCH


def test_large_member_is_scanned_in_chunks(make_scanner, tmp_path: Path) -> None:
    limits = ScanLimits(chunk_bytes=256 * 1024, overlap_bytes=4096)
    body = bytearray(b"q" * (1024 * 1024))
    body[700_000 : 700_000 + len(WORD)] = WORD
    data = factories.zip_bytes({"dump/big.txt": bytes(body)}, compression=0)
    result = scan_file(make_scanner(limits=limits), tmp_path, "big.zip", data)
    # The zip stores the member uncompressed, so the raw container matches too, 42 bytes later
    # (the local header and name come first).
    assert [(m.member, m.offsets) for m in result.matches] == [(None, (700_042,)), ("dump/big.txt", (700_000,))]
