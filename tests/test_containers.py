"""Containers made by real tools (issue 14, items 5 and 6): 7z, zstd, lz4, zlib, git packs and bundles, deep nesting."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.policy import UNINSPECTED_SEVERITY, Context, decide
from agent.scanning import Status
from agent.sources.work import ClipboardWork, FileWork
from tests import factories
from tests.conftest import SECRET_WORD

WORD = SECRET_WORD.encode()
CODE = b"def settle(batch):\n    key = '" + WORD + b"'\n    return sum(batch)\n"
CTX = Context(host="ws-17", agent_version="0.1.0", ruleset_version="abc123")


def run(*argv: str, cwd: Path) -> None:
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is not installed (make apt)")
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)


def members(result) -> set[str | None]:
    return {m.member for m in result.matches}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "core.py").write_bytes(CODE)
    (d / "README.md").write_bytes(b"payments service\n")
    return d


def test_7z_members(scanner, src: Path) -> None:
    run("7zz", "a", "-bd", "../out.7z", "core.py", "README.md", cwd=src)
    result = scanner.scan_path(str(src.parent / "out.7z"))
    assert result.status is Status.MATCH, result
    assert members(result) == {"core.py"}


@pytest.mark.parametrize("header", ["-mhe=off", "-mhe=on"])
def test_password_7z_is_encrypted_and_an_event_on_every_channel(scanner, src: Path, header: str) -> None:
    run("7zz", "a", "-bd", "-pletmein", header, "../locked.7z", "core.py", cwd=src)
    result = scanner.scan_path(str(src.parent / "locked.7z"))
    assert result.status is Status.ENCRYPTED and result.uninspected, result
    decision = decide(FileWork(path=result.path), result, CTX, user="v", now=0)
    assert decision is not None and decision.event["severity"] == UNINSPECTED_SEVERITY == "medium"


@pytest.mark.parametrize(
    "argv, name",
    [
        (["zstd", "-q", "core.py", "-o", "../core.py.zst"], "core.py.zst"),
        (["lz4", "-q", "core.py", "../core.py.lz4"], "core.py.lz4"),
    ],
)
def test_zstd_and_lz4_streams(scanner, src: Path, argv: list[str], name: str) -> None:
    # The word's halves come first, so the compressor codes the word as two back-references:
    # the compressed bytes do not hold it.
    (src / "core.py").write_bytes(b"# ZEBRAFISH-notes\n# PAYLOAD-7741 ids\n" + CODE)
    run(*argv, cwd=src)
    assert WORD not in (src.parent / name).read_bytes()
    assert members(scanner.scan_path(str(src.parent / name))) == {"data"}


def test_tar_zst_is_opened_in_place(scanner, src: Path) -> None:
    run("tar", "--zstd", "-cf", "../src.tar.zst", ".", cwd=src)
    assert members(scanner.scan_path(str(src.parent / "src.tar.zst"))) == {"./core.py"}


def git_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    run("git", "init", "-q", "-b", "main", cwd=repo)
    run("git", "config", "user.email", "v@example.com", cwd=repo)
    run("git", "config", "user.name", "V", cwd=repo)
    return repo


def test_zlib_stream_of_a_git_loose_object(scanner, src: Path) -> None:
    repo = git_repo(src.parent)
    (repo / "core.py").write_bytes(b"# ZEBRAFISH-notes\n# PAYLOAD-7741 ids\n" + CODE)
    run("git", "add", "core.py", cwd=repo)
    loose = [p for p in glob.glob(str(repo / ".git" / "objects" / "??" / "*"))]
    assert len(loose) == 1
    assert WORD not in Path(loose[0]).read_bytes()
    assert members(scanner.scan_path(loose[0])) == {"data"}


def history(repo: Path) -> None:
    """Code committed, then replaced by a longer version: git keeps the longer one whole and
    stores the one holding the code as a delta of it."""
    body = b"".join(b"def step_%d(x):\n    return x * %d + %d\n" % (i, i, i * 7) for i in range(400))
    (repo / "core.py").write_bytes(body + CODE)
    run("git", "add", "core.py", cwd=repo)
    run("git", "commit", "-q", "-m", "first", cwd=repo)
    (repo / "core.py").write_bytes(body + b"def settle(batch):\n    return 0\n" + b"# reviewed\n" * 200)
    run("git", "commit", "-q", "-am", "second", cwd=repo)


def test_git_packfile_resolves_deltas(scanner, src: Path) -> None:
    repo = git_repo(src.parent)
    history(repo)
    run("git", "repack", "-adq", cwd=repo)
    (pack,) = glob.glob(str(repo / ".git" / "objects" / "pack" / "*.pack"))
    result = scanner.scan_path(pack)
    assert result.status is Status.MATCH, result
    (member,) = members(result)
    assert member is not None and member.startswith("blob:")
    index = pack[: -len(".pack")] + ".idx"
    listing = subprocess.run(["git", "verify-pack", "-v", index], capture_output=True, check=True, text=True).stdout
    deltas = {line.split()[0] for line in listing.splitlines() if len(line.split()) == 7}
    assert member.removeprefix("blob:") in deltas, listing


def test_git_pack_objects_output(scanner, src: Path) -> None:
    repo = git_repo(src.parent)
    history(repo)
    listing = subprocess.run(["git", "rev-list", "--objects", "--all"], cwd=repo, capture_output=True, check=True).stdout
    pack = subprocess.run(["git", "pack-objects", "--stdout"], cwd=repo, input=listing, capture_output=True, check=True).stdout
    (src.parent / "objects.bin").write_bytes(pack)
    assert scanner.scan_path(str(src.parent / "objects.bin")).status is Status.MATCH


def test_git_bundle(scanner, src: Path) -> None:
    repo = git_repo(src.parent)
    history(repo)
    run("git", "bundle", "create", "-q", "../repo.bundle", "--all", cwd=repo)
    result = scanner.scan_path(str(src.parent / "repo.bundle"))
    assert result.status is Status.MATCH, result


def test_zip_nested_too_deep_is_an_event_on_every_channel(scanner, tmp_path: Path) -> None:
    deep = tmp_path / "deep.zip"
    deep.write_bytes(factories.nested_zip_bytes(6, {"src/core.py": CODE}))
    result = scanner.scan_path(str(deep))
    assert result.status is Status.SKIPPED and "nested deeper than 4" in (result.reason or "")
    assert result.uninspected
    for work in (FileWork(path=str(deep)), FileWork(path=str(deep), channel="usb")):
        decision = decide(work, result, CTX, user="v", now=0)
        assert decision is not None and decision.event["severity"] == "medium", work
    pasted = scanner.scan_bytes(deep.read_bytes(), name="clipboard")
    clip = ClipboardWork(data=deep.read_bytes(), original_size=deep.stat().st_size, sha256=pasted.sha256 or "")
    decision = decide(clip, pasted, CTX, user="v", now=0)
    assert decision is not None and decision.event["status"] == "skipped"


def test_unsupported_container_is_an_event_on_the_file_channel(scanner, tmp_path: Path) -> None:
    path = tmp_path / "src.rar"
    path.write_bytes(b"Rar!\x1a\x07\x01\x00" + bytes(100))
    result = scanner.scan_path(str(path))
    assert result.status is Status.SKIPPED and result.uninspected
    decision = decide(FileWork(path=str(path)), result, CTX, user="v", now=0)
    assert decision is not None and decision.event["severity"] == "medium"


def test_a_fifo_skipped_in_the_home_folder_is_still_no_event(scanner, tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "pipe")
    result = scanner.scan_path(str(tmp_path / "pipe"))
    assert result.status is Status.SKIPPED and not result.uninspected
    assert decide(FileWork(path=str(tmp_path / "pipe")), result, CTX, user="v", now=0) is None


def test_7z_bomb_stops_at_the_ratio_before_extracting(scanner, tmp_path: Path) -> None:
    (tmp_path / "zeros.bin").write_bytes(bytes(8 * 1024 * 1024))
    run("7zz", "a", "-bd", "bomb.7z", "zeros.bin", cwd=tmp_path)
    result = scanner.scan_path(str(tmp_path / "bomb.7z"))
    assert result.status is Status.TOO_LARGE and "ratio" in (result.reason or ""), result


def test_corrupt_git_pack_is_unreadable_not_a_crash(scanner, src: Path) -> None:
    repo = git_repo(src.parent)
    history(repo)
    run("git", "repack", "-adq", cwd=repo)
    (pack,) = glob.glob(str(repo / ".git" / "objects" / "pack" / "*.pack"))
    cut = src.parent / "cut.pack"
    cut.write_bytes(Path(pack).read_bytes()[:400])
    assert scanner.scan_path(str(cut)).status is Status.UNREADABLE
