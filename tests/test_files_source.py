"""The file source on real inotify and fanotify: closes, quiet creations, folders moved or copied in."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from agent import pipeline as pipeline_module
from agent.pipeline import Pipeline
from agent.policy import Context
from agent.scanning import Scanner, load_rules
from agent.sources.fanotify_hub import FanotifyHub
from agent.sources.files import FileSource
from agent.sources.work import FileWork, Work
from agent.spool import Spool
from tests.conftest import SECRET_WORD
from tests.waiting import wait_for


class Collector:
    def __init__(self) -> None:
        self.items: list[FileWork] = []
        self.lock = threading.Lock()

    def __call__(self, work: Work) -> bool:
        assert isinstance(work, FileWork)
        with self.lock:
            self.items.append(work)
        return True

    def paths(self) -> set[str]:
        with self.lock:
            return {w.path for w in self.items}

    def reasons(self, path: Path) -> list[str]:
        with self.lock:
            return [w.reason for w in self.items if w.path == str(path)]


@pytest.fixture(params=["inotify", "fanotify"])
def watched(tmp_path: Path, request: pytest.FixtureRequest):
    """A source on each backend; the fanotify hub is told to take this process's own writes (the tests write)."""
    hub = None
    if request.param == "fanotify":
        if os.geteuid() != 0:
            pytest.skip("fanotify needs CAP_SYS_ADMIN")
        hub = FanotifyHub(own_pid=0)
        hub.start()
    root = tmp_path / "Documents"
    root.mkdir()
    collected = Collector()
    source = FileSource(collected, [str(root)], exclude=["**/.cache/**", "*.tmp"], quiet_s=0.3, hub=hub)
    source.start()
    wait_for(lambda: source.health()["state"] == "ok" and f"1 folder(s) with {request.param}" in source.health()["message"], message="watch up")
    yield root, collected, source
    source.stop()
    source.stop()  # twice is harmless
    if hub is not None:
        hub.stop()
        hub.close()


def test_closed_file_is_emitted_once(watched) -> None:
    root, collected, _ = watched
    f = root / "report.txt"
    f.write_text("draft")
    wait_for(lambda: str(f) in collected.paths())
    assert collected.reasons(f) == ["closed"]


def test_rewrite_with_new_content_is_emitted_again(watched) -> None:
    root, collected, _ = watched
    f = root / "a.txt"
    f.write_text("one")
    wait_for(lambda: collected.reasons(f) == ["closed"])
    f.write_text("two, longer")
    wait_for(lambda: collected.reasons(f) == ["closed", "closed"])


def test_same_size_overwrite_is_emitted_again(watched) -> None:
    root, collected, _ = watched
    f = root / "notes.py"
    code = f"key = '{SECRET_WORD}'\n".encode()
    f.write_bytes(b"#" * len(code))  # a decoy of the very size the code will have
    wait_for(lambda: collected.reasons(f) == ["closed"], message="the decoy")
    f.write_bytes(code)  # same inode, same size, well within a second
    wait_for(lambda: collected.reasons(f) == ["closed", "closed"], timeout=5, message="the overwrite")


def test_files_refused_by_a_full_queue_are_taken_without_another_close(
    tmp_path: Path, rules_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "SUBMIT_TIMEOUT_S", 0.05)
    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 20)
    context = Context(host="h", agent_version="t", ruleset_version="v", report_clean=True)
    # A queue of one, its scanner not started yet: the first file fills it, the others are refused.
    pipeline = Pipeline(Scanner(load_rules(rules_dir)), spool, context, threads=1, queue_size=1)
    root = tmp_path / "Documents"
    root.mkdir()
    source = FileSource(pipeline.submit, [str(root)], quiet_s=0.3)
    source.start()
    try:
        wait_for(lambda: "1 folder" in source.health()["message"], message="watch up")
        files = [root / f"report{i}.txt" for i in range(5)]
        for f in files:
            f.write_text(f"draft {f.name}")
        wait_for(lambda: "not scanned: the work queue was full" in source.health()["message"], message="refusals counted")
        pipeline.start()  # the scanner catches up; nobody touches the files again
        wait_for(lambda: spool.depth() == 5, timeout=20, message="every file scanned")
        assert {e["path"] for e in spool.peek(10)} == {str(f) for f in files}
        wait_for(lambda: source.health()["state"] == "ok", message="health back to ok")
        assert "refused by a full work queue" in source.health()["message"]
    finally:
        source.stop()
        pipeline.stop(drain_s=0)
        spool.close()


def test_folder_copied_in_is_walked(watched, tmp_path: Path) -> None:
    root, collected, _ = watched
    src = tmp_path / "export"
    (src / "deep" / "deeper").mkdir(parents=True)
    for i in range(20):
        (src / "deep" / "deeper" / f"f{i}.py").write_text(f"x = {i}\n")
    shutil.copytree(src, root / "export")
    expected = {str(root / "export" / "deep" / "deeper" / f"f{i}.py") for i in range(20)}
    wait_for(lambda: expected <= collected.paths())
    # Each file once, whether the walk or its close event got there first.
    assert len([w for w in collected.items if w.path in expected]) == 20


def test_folder_moved_in_is_walked(watched, tmp_path: Path) -> None:
    root, collected, _ = watched
    src = tmp_path / "staging"
    src.mkdir()
    (src / "plan.docx").write_bytes(b"PK...")
    os.rename(src, root / "staging")
    wait_for(lambda: str(root / "staging" / "plan.docx") in collected.paths())
    # watchdog also reports the moved folder's files as created; fanotify names a folder by its handle
    # when the event is read, so the file's close just before the move may read as one inside: once.
    assert collected.reasons(root / "staging" / "plan.docx") in (["folder"], ["created"], ["closed"])


def test_file_moved_in_is_emitted(watched, tmp_path: Path) -> None:
    root, collected, _ = watched
    outside = tmp_path / "draft.txt"
    outside.write_text("moved")
    os.utime(outside, (1_700_000_000, 1_700_000_000))  # written long before the move
    os.rename(outside, root / "draft.txt")
    wait_for(lambda: collected.reasons(root / "draft.txt") == ["moved"])


def test_created_but_never_closed_file_is_emitted_after_quiet(watched) -> None:
    root, collected, _ = watched
    f = root / "held-open.log"
    handle = open(f, "w")
    try:
        handle.write("still open")
        handle.flush()
        wait_for(lambda: collected.reasons(f) == ["created"], timeout=5)
    finally:
        handle.close()


def test_excluded_paths_are_ignored(watched) -> None:
    root, collected, _ = watched
    (root / ".cache").mkdir()
    (root / ".cache" / "blob").write_text("cache")
    (root / "scratch.tmp").write_text("tmp")
    marker = root / "marker.txt"
    marker.write_text("m")
    wait_for(lambda: str(marker) in collected.paths())
    assert collected.paths() == {str(marker)}


def test_watched_folder_deleted_and_recreated(watched) -> None:
    root, collected, source = watched
    shutil.rmtree(root)
    wait_for(lambda: source.health()["state"] == "degraded", timeout=10)
    root.mkdir()
    wait_for(lambda: source.health()["state"] == "ok", timeout=10)
    f = root / "after.txt"
    f.write_text("back")
    wait_for(lambda: str(f) in collected.paths(), timeout=10)


def test_missing_root_is_watched_once_it_appears(tmp_path: Path) -> None:
    root = tmp_path / "Later"
    collected = Collector()
    source = FileSource(collected, [str(root)], quiet_s=0.3)
    source.start()
    try:
        wait_for(lambda: "does not exist" in source.health()["message"])
        root.mkdir()
        wait_for(lambda: source.health()["state"] == "ok", timeout=10)
        (root / "x.txt").write_text("x")
        wait_for(lambda: str(root / "x.txt") in collected.paths())
    finally:
        source.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to lower the inotify watch limit")
def test_watch_limit_falls_back_to_polling(tmp_path: Path) -> None:
    root = tmp_path / "big"
    for i in range(60):
        (root / f"d{i}").mkdir(parents=True)
    limit_file = Path("/proc/sys/fs/inotify/max_user_watches")
    old = limit_file.read_text()
    collected = Collector()
    source = FileSource(collected, [str(root)], quiet_s=0.3, poll_interval_s=0.3)
    limit_file.write_text("30\n")  # fewer watches than folders: watchdog would skip some silently
    try:
        source.start()
        wait_for(lambda: "polling" in source.health()["message"], timeout=10, message="fallback to polling")
    finally:
        limit_file.write_text(old)
    try:
        target = root / "d50" / "x.txt"
        target.write_text("deep in the tree")
        wait_for(lambda: str(target) in collected.paths(), timeout=10)
    finally:
        source.stop()
