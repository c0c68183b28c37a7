"""The agent's scanner reads watermarks in what it scans: a match of kind ``mark`` with the payload,
in plain files, archive members, large files read in windows, and never for canary-looking text or
unmarked non-Latin text."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from agent.marks import text as textmarks
from agent.marks.payload import HOMOGLYPH, ZERO_WIDTH
from agent.scanning.limits import KiB, MiB, ScanLimits
from agent.scanning.results import Status
from tests.conftest import run_cli

PAYLOAD = bytes.fromhex("5a17c0ffee42")
PARAGRAPH = (
    "Every invoice is reconciled against the ledger before the nightly close, and operators review the "
    "exceptions each morning, escalate disputes to the account owner and record each decision with its reason. "
)
PROSE = "\n\n".join(PARAGRAPH * 3 for _ in range(20))


def _marks(result) -> dict[str, dict]:
    return {m.carrier: m.to_dict() for m in result.matches if m.kind == "mark"}


def test_a_marked_file_is_a_mark_match_with_its_payload(tmp_path: Path, rules_dir: Path) -> None:
    marked = tmp_path / "runbook.txt"
    marked.write_text(textmarks.mark_text(PROSE, PAYLOAD))
    (tmp_path / "plain.txt").write_text(PROSE)
    result = run_cli("scan", str(marked), str(tmp_path / "plain.txt"), "--rules", str(rules_dir), "--json")
    assert result.returncode == 1, result.stderr
    lines = {Path(row["path"]).name: row for row in map(json.loads, result.stdout.splitlines())}
    assert lines["plain.txt"]["status"] == "clean"
    found = {m["carrier"]: m for m in lines["runbook.txt"]["matches"] if m["kind"] == "mark"}
    assert set(found) == {HOMOGLYPH, ZERO_WIDTH}
    for match in found.values():
        assert match["payload"] == PAYLOAD.hex() and match["frames"] >= 1
        assert match["namespace"] == "marks" and match["rule"] == "watermark" and match["severity"] == "low"


def test_an_archived_copy_names_its_member(make_scanner) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("docs/runbook.md", textmarks.mark_text(PROSE, PAYLOAD))
    result = make_scanner().scan_bytes(buffer.getvalue(), name="out.zip")
    assert result.status is Status.MATCH
    assert {(m.carrier, m.member, m.payload) for m in result.matches if m.kind == "mark"} == {
        (HOMOGLYPH, "docs/runbook.md", PAYLOAD.hex()),
        (ZERO_WIDTH, "docs/runbook.md", PAYLOAD.hex()),
    }


def test_a_large_file_read_in_windows_finds_an_excerpt_anywhere_and_counts_no_frame_twice(tmp_path: Path, make_scanner) -> None:
    """Windows overlap (and so do the reader's slices): frames are the most one read saw, not a sum."""
    excerpt = textmarks.mark_text(PROSE, PAYLOAD)
    alone = {f.carrier: f.frames for f in textmarks.read_text(excerpt)}
    line = b"x = compute(a, b)  # plain ASCII code\n"
    # Windows of 1 MiB read after 256 KiB kept from the last: the third and fourth share [2816, 3072) KiB.
    at = 2830 * KiB
    big = tmp_path / "big.txt"
    big.write_bytes((line * (at // len(line) + 1))[:at] + excerpt.encode() + line * 30_000)
    assert len(excerpt.encode()) < 200 * KiB
    limits = ScanLimits(chunk_bytes=1 * MiB, overlap_bytes=256 * KiB)
    result = make_scanner(limits=limits).scan_path(str(big))
    marks = _marks(result)
    assert set(marks) == {HOMOGLYPH, ZERO_WIDTH}
    assert all(marks[c]["frames"] <= alone[c] for c in marks)


def test_canary_secrets_and_unmarked_foreign_text_make_no_mark_match(make_scanner) -> None:
    """Canaries are the bundle's canary rules' to report (a real cloud key id must not travel as a payload)."""
    scanner = make_scanner()
    binary = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + textmarks.mark_text(PROSE, PAYLOAD).encode()
    assert not _marks(scanner.scan_bytes(binary, name="chart.png"))  # binary content: not read for marks
    for content in (
        "aws_access_key_id = AKIAQWERTYUIOPASDFGH\nnote DLPC1-ABCDEFGHIJKLMNOPQRSTUVWXYZ\n",
        "Счёт сверяется с главной книгой перед ночным закрытием, а исключения разбираются утром. " * 200,
        "Рахунок звіряють із головною книгою перед нічним закриттям, і виняткові випадки розглядають уранці. " * 200,
    ):
        result = scanner.scan_bytes(content.encode(), name="note.txt")
        assert not _marks(result), content[:40]
