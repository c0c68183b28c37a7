"""The scanner on plain content: statuses, offsets, chunking, cache, special files."""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
from pathlib import Path

from agent.scanning import ScanLimits, Status
from agent.scanning.cache import ResultCache
from tests.conftest import SECRET_WORD

WORD = SECRET_WORD.encode()


def test_match_reports_rule_meta_and_offsets(scanner, tmp_path: Path) -> None:
    f = tmp_path / "leak.py"
    f.write_bytes(b"x" * 100 + WORD + b"\n" + b"y" * 50 + WORD)
    result = scanner.scan_path(str(f))
    assert result.status is Status.MATCH
    assert result.size == f.stat().st_size
    (m,) = result.matches
    assert (m.rule, m.namespace, m.severity, m.category, m.tags) == ("secret_word", "testpack", "high", "source_code", ("test",))
    assert m.member is None
    assert m.offsets == (100, 100 + len(WORD) + 1 + 50)
    assert m.strings == ("$w",)


def test_clean_file_has_hash_and_size(scanner, tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("nothing to see")
    result = scanner.scan_path(str(f))
    assert result.status is Status.CLEAN
    assert result.sha256 == hashlib.sha256(b"nothing to see").hexdigest()
    assert result.reason is None


def test_scan_bytes(scanner) -> None:
    assert scanner.scan_bytes(b"clipboard " + WORD, name="clipboard").matched
    assert scanner.scan_bytes(b"").status is Status.CLEAN


def test_chunked_scan_finds_strings_across_boundaries(make_scanner, tmp_path: Path) -> None:
    limits = ScanLimits(chunk_bytes=64 * 1024, overlap_bytes=1024)
    scanner = make_scanner(limits=limits)
    chunk = limits.chunk_bytes
    # One occurrence straddles the first boundary, one sits inside an overlap, one deep in the file.
    offsets = [chunk - 5, 2 * chunk - 200, 5 * chunk + 123]
    data = bytearray(b"." * (6 * chunk))
    for off in offsets:
        data[off : off + len(WORD)] = WORD
    f = tmp_path / "big.txt"
    f.write_bytes(bytes(data))
    result = scanner.scan_path(str(f))
    assert result.status is Status.MATCH
    assert result.matches[0].offsets == tuple(offsets)
    assert result.size == len(data)


def test_too_large(make_scanner, tmp_path: Path) -> None:
    f = tmp_path / "huge.bin"
    f.write_bytes(b"a" * 5000)
    result = make_scanner(limits=ScanLimits(max_file_bytes=4096)).scan_path(str(f))
    assert result.status is Status.TOO_LARGE
    assert result.size == 5000
    assert "4096" in result.reason


def test_deadline_gives_timeout_and_is_not_cached(make_scanner, tmp_path: Path) -> None:
    ticks = itertools.count(step=200.0)  # every look at the clock costs 200 s
    cache = ResultCache()
    scanner = make_scanner(limits=ScanLimits(timeout_s=150), clock=lambda: next(ticks), cache=cache)
    f = tmp_path / "slow.txt"
    f.write_text("content")
    result = scanner.scan_path(str(f))
    assert result.status is Status.TIMEOUT
    assert len(cache) == 0


def test_cache_spares_identical_content(make_scanner, tmp_path: Path) -> None:
    cache = ResultCache()
    scanner = make_scanner(cache=cache)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"copy " + WORD)
    b.write_bytes(b"copy " + WORD)
    first, second = scanner.scan_path(str(a)), scanner.scan_path(str(b))
    assert not first.cached and second.cached
    assert second.path == str(b) and second.matches == first.matches
    assert (cache.hits, cache.misses) == (1, 1)


def test_cache_is_keyed_by_ruleset_version(make_scanner, rules_dir: Path, tmp_path: Path) -> None:
    from agent.scanning import Scanner, load_rules

    cache = ResultCache()
    f = tmp_path / "a.txt"
    f.write_bytes(b"new-rule-string")
    assert make_scanner(cache=cache).scan_path(str(f)).status is Status.CLEAN
    (rules_dir / "new.yar").write_text('rule fresh { strings: $a = "new-rule-string" condition: $a }')
    result = Scanner(load_rules(rules_dir), cache=cache).scan_path(str(f))
    assert result.status is Status.MATCH and not result.cached


def test_special_files_are_skipped_without_blocking(scanner, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert scanner.scan_path(str(fifo)).status is Status.SKIPPED  # would hang if opened for reading
    assert scanner.scan_path("/dev/zero").status is Status.SKIPPED
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        result = scanner.scan_path(str(sock_path))
    assert result.status is Status.SKIPPED and "socket" in result.reason


def test_broken_symlink_and_missing_file_are_unreadable(scanner, tmp_path: Path) -> None:
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    result = scanner.scan_path(str(link))
    assert (result.status, result.reason) == (Status.UNREADABLE, "broken symbolic link")
    assert scanner.scan_path(str(tmp_path / "absent")).status is Status.UNREADABLE


def test_non_utf8_file_name(scanner, tmp_path: Path) -> None:
    name = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff.txt"))
    with open(name, "wb") as f:
        f.write(WORD)
    result = scanner.scan_path(name)
    assert result.status is Status.MATCH
    assert os.fsencode(result.path).endswith(b"caf\xe9-\xff.txt")
