"""Which paths a recursive scan visits."""

from __future__ import annotations

import os
from pathlib import Path

from agent.scanning.walk import iter_targets


def test_walk_is_sorted_skips_excludes_and_keeps_special_entries(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "node_modules" / "x").mkdir(parents=True)
    (tmp_path / "node_modules" / "x" / "i.js").write_text("i")
    (tmp_path / "build.o").write_text("o")
    (tmp_path / "loop").symlink_to(tmp_path)  # a link back up: must not be followed
    os.mkfifo(tmp_path / "fifo")
    paths = [t.path for t in iter_targets([str(tmp_path)], exclude=["**/node_modules/**", "*.o"])]
    rel = [os.path.relpath(p, tmp_path) for p in paths]
    assert rel == ["a.txt", "fifo", "loop", "b/z.txt"]


def test_unlistable_directory_is_reported(tmp_path: Path, monkeypatch) -> None:
    real_scandir = os.scandir

    def deny(path):
        if str(path).endswith("secret"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    (tmp_path / "secret").mkdir()
    monkeypatch.setattr(os, "scandir", deny)
    (target,) = [t for t in iter_targets([str(tmp_path)]) if t.error]
    assert target.path.endswith("secret") and "Permission denied" in target.error


def test_files_on_the_command_line_are_kept(tmp_path: Path) -> None:
    f = tmp_path / "one.txt"
    f.write_text("x")
    assert [t.path for t in iter_targets([str(f), str(tmp_path / "missing")])] == [str(f), str(tmp_path / "missing")]
