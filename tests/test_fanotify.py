"""fanotify and /proc: the writer of a file, by pid, executable, command line, user and parents."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import procinfo
from agent.sources import fanotify


def test_describe_this_process() -> None:
    me = procinfo.describe(os.getpid())
    assert me.exe == os.path.realpath(sys.executable)
    assert me.cmdline and "pytest" in me.cmdline
    assert me.uid == os.getuid() and me.ppid == os.getppid()
    assert me.user is not None
    chain = procinfo.lineage(os.getpid())
    assert [p.pid for p in chain[:2]] == [os.getpid(), os.getppid()]
    assert 2 <= len(chain) <= procinfo.PARENT_LEVELS + 1


def test_an_exited_process_leaves_only_its_pid() -> None:
    done = subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert done.returncode == 0
    gone = procinfo.describe(2**22 + 12345)
    assert gone == procinfo.Process(pid=2**22 + 12345)


def test_command_lines_are_capped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "x" * 20_000])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = procinfo.describe(child.pid).cmdline
            if seen and "x" in seen:
                break
            time.sleep(0.05)
        assert seen is not None and len(seen) == procinfo.MAX_CMDLINE_CHARS and seen.endswith("\u2026")
    finally:
        child.kill()
        child.wait()


def test_parse_closes_and_refuses_what_it_does_not_know() -> None:
    overflow = struct.pack("=IBBHQii", 24, fanotify.METADATA_VERSION, 0, 24, fanotify.FAN_Q_OVERFLOW, -1, 0)
    unknown = struct.pack("=IBBHQii", 24, 99, 0, 24, fanotify.FAN_CLOSE_WRITE, -1, 7)
    events = fanotify.parse(overflow + unknown + b"\0" * 5)
    assert events == [fanotify.WriteEvent(path=None, pid=0, overflow=True, mask=fanotify.FAN_Q_OVERFLOW)]


@pytest.mark.skipif(os.geteuid() != 0, reason="fanotify needs CAP_SYS_ADMIN")
def test_the_writer_of_a_file_is_named(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    script = f"import time\nwith open({str(target)!r}, 'w') as f: f.write('x')\ntime.sleep(30)\n"
    with fanotify.Fanotify() as group:
        group.watch(str(tmp_path))
        writer = subprocess.Popen([sys.executable, "-c", script])
        try:
            found = None
            deadline = time.monotonic() + 10
            while found is None and time.monotonic() < deadline:
                found = next((e for e in group.read(0.5) if e.path == str(target)), None)
            assert found is not None and found.pid == writer.pid
            who = procinfo.lineage(found.pid)
            assert who[0].exe == os.path.realpath(sys.executable) and "out.txt" in (who[0].cmdline or "")
            assert who[1].pid == os.getpid()
        finally:
            writer.kill()
            writer.wait()
    assert group.fd == -1
