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


def test_fid_records_are_parsed_and_a_truncated_one_is_not() -> None:
    handle = struct.pack("=Ii", 8, 1) + b"\x01\x02\x03\x04\x05\x06\x07\x08"
    record = struct.pack("=II", 0x1234, 0x5678) + handle + b"report.txt\0"
    record += b"\0" * (-(len(record) + 4) % 4)
    info = struct.pack("=BBH", fanotify.FAN_EVENT_INFO_TYPE_DFID_NAME, 0, 4 + len(record)) + record
    mask = fanotify.FAN_CLOSE_WRITE | fanotify.FAN_CREATE
    event = struct.pack("=IBBHQii", 24 + len(info), fanotify.METADATA_VERSION, 0, 24, mask, fanotify.FAN_NOFD, 4321) + info
    overflow = struct.pack("=IBBHQii", 24, fanotify.METADATA_VERSION, 0, 24, fanotify.FAN_Q_OVERFLOW, fanotify.FAN_NOFD, 0)
    parsed = fanotify.parse_fid(event + overflow + event[:-3])
    assert parsed == [
        fanotify.FidEvent(mask=mask, pid=4321, fsid=0x1234 | 0x5678 << 32, handle=handle, name="report.txt"),
        fanotify.FidEvent(mask=fanotify.FAN_Q_OVERFLOW, pid=0),
    ]
    assert parsed[1].overflow and not parsed[0].overflow


@pytest.mark.skipif(os.geteuid() != 0, reason="open_by_handle_at needs CAP_DAC_READ_SEARCH")
def test_a_folder_handle_opens_back_to_its_path(tmp_path: Path) -> None:
    folder = tmp_path / "a folder"
    folder.mkdir()
    handle = fanotify.handle_of(str(folder))
    assert handle is not None
    mount_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert fanotify.handle_path(mount_fd, handle) == str(folder)
        folder.rmdir()
        assert fanotify.handle_path(mount_fd, handle) is None
    finally:
        os.close(mount_fd)
