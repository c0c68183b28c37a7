"""Byte-identical copies of protected files are reported even when no rule fires."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.scanning import ProtectedIndex, Status
from agent.scanning.cache import ResultCache
from tests import factories

SOURCE = b"package ledger\n\nfunc Settle(batch []Entry) error {\n" + b"    // reconcile entries\n" * 20 + b"}\n"


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "customer-repo"
    (repo / "ledger").mkdir(parents=True)
    (repo / "ledger" / "settle.go").write_bytes(SOURCE)
    (repo / "ledger" / "doc.go").write_bytes(b"package ledger\n")  # too small to mean anything
    (repo / ".git").mkdir()
    (repo / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\n" * 10)
    return repo


def test_copy_anywhere_is_reported(make_scanner, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    index = ProtectedIndex.build([str(repo)], exclude=["**/.git/**"])
    assert len(index) == 1
    scanner = make_scanner(protected=index)
    copy = tmp_path / "usb" / "renamed.txt"
    copy.parent.mkdir()
    shutil.copy(repo / "ledger" / "settle.go", copy)
    result = scanner.scan_path(str(copy))
    assert result.status is Status.MATCH
    (m,) = result.matches
    assert (m.rule, m.namespace, m.category) == ("protected_file_copy", "protected", "protected_copy")
    assert m.protected_path == str((repo / "ledger" / "settle.go").resolve())


def test_original_is_not_a_copy_of_itself(make_scanner, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    scanner = make_scanner(protected=ProtectedIndex.build([str(repo)]), cache=ResultCache())
    original = repo / "ledger" / "settle.go"
    assert scanner.scan_path(str(original)).status is Status.CLEAN
    copy = tmp_path / "copy.go"
    shutil.copy(original, copy)
    # Same content, so the cache answers; the copy must still be reported.
    result = scanner.scan_path(str(copy))
    assert result.cached and result.status is Status.MATCH


def test_copy_inside_an_archive(make_scanner, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    scanner = make_scanner(protected=ProtectedIndex.build([str(repo)]))
    archive = tmp_path / "export.zip"
    archive.write_bytes(factories.zip_bytes({"work/settle.go": SOURCE, "doc.go": b"package ledger\n"}))
    result = scanner.scan_path(str(archive))
    assert [(m.rule, m.member) for m in result.matches] == [("protected_file_copy", "work/settle.go")]


def test_small_files_and_changed_copies_are_not_reported(make_scanner, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    scanner = make_scanner(protected=ProtectedIndex.build([str(repo)]))
    small = tmp_path / "doc.go"
    small.write_bytes(b"package ledger\n")
    changed = tmp_path / "settle.go"
    changed.write_bytes(SOURCE + b"\n")
    assert scanner.scan_path(str(small)).status is Status.CLEAN
    assert scanner.scan_path(str(changed)).status is Status.CLEAN


def test_refresh_reuses_hashes_of_unchanged_files(tmp_path: Path, monkeypatch) -> None:
    import agent.scanning.protected as protected_module

    repo = make_repo(tmp_path)
    first = ProtectedIndex.build([str(repo)])
    hashed: list[str] = []
    real_hash = protected_module._hash_file
    monkeypatch.setattr(protected_module, "_hash_file", lambda p: hashed.append(p) or real_hash(p))
    (repo / "ledger" / "new.go").write_bytes(SOURCE.replace(b"reconcile", b"recompute"))
    second = ProtectedIndex.build([str(repo)], previous=first)
    assert [Path(p).name for p in hashed] == ["new.go"]
    assert len(second) == len(first) + 1 and second.version != first.version
