"""The file source on fanotify: writers named, moves and folders seen, no watch per folder, losses rescanned, inotify kept where refused."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import procinfo
from agent.sources.fanotify_hub import FanotifyHub, open_hub
from agent.sources.files import FileSource, WriteWatch
from agent.sources.work import FileWork, SourceProblem, Work
from tests.agent_process import Agent, write_config
from tests.conftest import run_cli
from tests.loopdev import LoopMounts
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="fanotify needs CAP_SYS_ADMIN")

FANOTIFY_QUEUE = Path("/proc/sys/fs/fanotify/max_queued_events")
# A writer that stays alive while the test looks at it: its /proc entry is there for sure.
WRITER = "import sys, time\nwith open(sys.argv[1], 'w') as f: f.write(sys.argv[2])\nprint('written', flush=True)\ntime.sleep(60)\n"


class Collected:
    """What a source emitted, by path."""

    def __init__(self) -> None:
        self.items: list[Work] = []
        self.lock = threading.Lock()

    def __call__(self, work: Work) -> bool:
        with self.lock:
            self.items.append(work)
        return True

    def files(self, path: Path | str | None = None) -> list[FileWork]:
        with self.lock:
            return [w for w in self.items if isinstance(w, FileWork) and (path is None or w.path == str(path))]

    def problems(self) -> list[SourceProblem]:
        with self.lock:
            return [w for w in self.items if isinstance(w, SourceProblem)]


@pytest.fixture
def hub() -> Iterator[FanotifyHub]:
    hub = FanotifyHub()
    hub.start()
    yield hub
    hub.stop()
    hub.close()


@pytest.fixture
def watched(tmp_path: Path, hub: FanotifyHub) -> Iterator[tuple[Path, Collected, FileSource]]:
    root = tmp_path / "Documents"
    root.mkdir()
    collected = Collected()
    source = FileSource(collected, [str(root)], exclude=["*.tmp"], quiet_s=0.3, hub=hub)
    source.start()
    wait_for(lambda: "1 folder(s) with fanotify: filesystem marks" in source.health()["message"], message="mark up")
    yield root, collected, source
    source.stop()


def write_in_child(path: Path, text: str = "draft") -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), text], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "written\n"
    return child


def stop_child(child: subprocess.Popen) -> None:
    child.kill()
    child.wait(10)
    if child.stdout is not None:
        child.stdout.close()


def test_the_writer_is_named_with_its_parents(watched) -> None:
    root, collected, _ = watched
    target = root / "report.txt"
    child = write_in_child(target)
    try:
        (work,) = wait_for(lambda: collected.files(target), message="the close")
        assert work.reason == "closed" and work.process is not None
        who = work.process
        assert who["pid"] == child.pid and who["exe"] == os.path.realpath(sys.executable)
        assert str(target) in who["cmdline"] and who["uid"] == os.getuid() and who["user"] == procinfo.describe(os.getpid()).user
        assert who["ppid"] == os.getpid() and who["parents"][0]["pid"] == os.getpid()
        assert who["parents"][0]["exe"] == os.path.realpath(sys.executable)
    finally:
        stop_child(child)


def test_a_cp_is_named(watched, hub: FanotifyHub, tmp_path: Path) -> None:
    """``cp`` exits right after its close, often before its event is read: one still copying is named
    by what its creation event read while it ran, a short one by the program its start was seen to open."""
    root, collected, _ = watched
    cp = os.path.realpath(shutil.which("cp") or "cp")
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    before = hub.dispatched
    copying = subprocess.Popen(["cp", str(fifo), str(root / "copy.bin")])
    try:
        with open(fifo, "wb") as feed:
            feed.write(b"first half\n")
            wait_for(lambda: hub.dispatched > before, message="the copy's creation read")  # cp waits on the fifo meanwhile
            feed.write(b"second half\n")
        assert copying.wait(30) == 0
    finally:
        if copying.poll() is None:
            copying.kill()
            copying.wait()
    (work,) = wait_for(lambda: collected.files(root / "copy.bin"), message="the copy")
    assert work.process is not None and work.process["exe"] == cp
    assert work.process["cmdline"] == f"cp {fifo} {root / 'copy.bin'}" and work.process["ppid"] == os.getpid()
    small = tmp_path / "small.txt"
    small.write_text("x" * 1024)
    copies = [root / f"small{i}.txt" for i in range(20)]
    for copy in copies:
        subprocess.run(["cp", str(small), str(copy)], check=True, timeout=30)
    wait_for(lambda: all(collected.files(c) for c in copies), message="the small copies")
    named = [collected.files(c)[0].process or {} for c in copies]
    assert [p.get("exe") for p in named] == [cp] * len(copies)
    # Its user and parent were read when its start was handled: unless it had exited by then too
    # (a loaded machine), they are this test's.
    assert {(p.get("uid"), p.get("ppid")) for p in named} <= {(os.getuid(), os.getpid()), (None, None)}
    assert all(p["parents"][0]["exe"] == os.path.realpath(sys.executable) for p in named if p.get("ppid"))


def test_a_file_and_a_folder_moved_in_are_emitted(watched, tmp_path: Path) -> None:
    root, collected, _ = watched
    outside = tmp_path / "outside"
    (outside / "export" / "deep").mkdir(parents=True)
    (outside / "notes.txt").write_text("moved file")
    for i in range(5):
        (outside / "export" / "deep" / f"f{i}.py").write_text(f"x = {i}\n")
    subprocess.run(["mv", str(outside / "notes.txt"), str(root / "notes.txt")], check=True, timeout=30)
    subprocess.run(["mv", str(outside / "export"), str(root / "export")], check=True, timeout=30)
    (moved,) = wait_for(lambda: collected.files(root / "notes.txt"), message="the file moved in")
    assert moved.reason == "moved"
    inside = [root / "export" / "deep" / f"f{i}.py" for i in range(5)]
    wait_for(lambda: all(collected.files(p) for p in inside), message="the folder's files")
    assert {w.reason for p in inside for w in collected.files(p)} == {"folder"}
    # Each carries the mover, gone long before: named by the program the hub saw it start.
    mv = os.path.realpath(shutil.which("mv") or "mv")
    assert {(w.process or {}).get("exe") for p in [root / "notes.txt", *inside] for w in collected.files(p)} == {mv}


def test_many_folders_cost_no_watch(tmp_path: Path, hub: FanotifyHub) -> None:
    root = tmp_path / "tree"
    folders = [root / f"team{i // 100:02d}" / f"proj{i:04d}" for i in range(3000)]
    for folder in folders:
        folder.mkdir(parents=True)
    before = inotify_watches()
    collected = Collected()
    source = FileSource(collected, [str(root)], quiet_s=0.3, hub=hub)
    source.start()
    try:
        wait_for(lambda: "fanotify" in source.health()["message"], message="mark up")
        deepest = folders[-1] / "late.txt"
        child = write_in_child(deepest)
        stop_child(child)
        wait_for(lambda: collected.files(deepest), message="a write in the last folder")
        assert inotify_watches() == before
    finally:
        source.stop()


def inotify_watches() -> int:
    """inotify watches this process holds, from each inotify descriptor's fdinfo."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify":
                count += Path(f"/proc/self/fdinfo/{fd}").read_text().count("inotify wd:")
        except OSError:
            continue
    return count


def test_a_group_numbered_past_1024_is_read(tmp_path: Path) -> None:
    """select() cannot wait on a descriptor past 1024; an agent holding many files must still read its group."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit ({hard}) is too low to test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(max(0, 1030 - len(os.listdir("/proc/self/fd"))))]
    try:
        hub = FanotifyHub()
        root = tmp_path / "Documents"
        root.mkdir()
        collected = Collected()
        source = FileSource(collected, [str(root)], quiet_s=0.3, hub=hub)
        hub.start()
        source.start()
        try:
            assert hub._fid_group.fd > 1024
            wait_for(lambda: "marks on" in source.health()["message"], message="mark up")
            stop_child(write_in_child(root / "late.txt"))
            wait_for(lambda: collected.files(root / "late.txt"), message="the close")
        finally:
            source.stop()
            hub.stop()
            hub.close()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_queue_overflow_is_reported_and_rescanned(tmp_path: Path) -> None:
    """A group made while the kernel's queue limit was 64 events, not read while 300 files are written."""
    try:
        old = FANOTIFY_QUEUE.read_text()
        FANOTIFY_QUEUE.write_text("64\n")
    except OSError as exc:
        pytest.skip(f"cannot lower {FANOTIFY_QUEUE}: {exc}")
    try:
        hub = FanotifyHub()
    finally:
        FANOTIFY_QUEUE.write_text(old)
    root = tmp_path / "Documents"
    root.mkdir()
    collected = Collected()
    source = FileSource(collected, [str(root)], quiet_s=0.3, hub=hub)
    source.start()
    try:
        wait_for(lambda: "fanotify" in source.health()["message"], message="mark up")
        script = "import sys\nfor i in range(300):\n    open(f'{sys.argv[1]}/f{i}.txt', 'w').write(str(i))\n"
        subprocess.run([sys.executable, "-c", script, str(root)], check=True, timeout=60)
        hub.start()  # only now is the queue read: it overflowed long ago
        (problem,) = wait_for(collected.problems, timeout=30, message="the loss reported")
        assert problem.path == str(root) and "fanotify queue overflowed: events were lost" in problem.message
        wait_for(lambda: all(collected.files(root / f"f{i}.txt") for i in range(300)), timeout=30, message="every file")
        assert "rescan" in {w.reason for w in collected.files()}
        assert source.health()["state"] == "degraded"
    finally:
        source.stop()
        hub.stop()
        hub.close()


def test_excluded_outside_and_own_writes_are_ignored_and_the_deepest_root_wins(tmp_path: Path, hub: FanotifyHub) -> None:
    outer, inner = tmp_path / "Documents", tmp_path / "Documents" / "Team"
    inner.mkdir(parents=True)
    (tmp_path / "Elsewhere").mkdir()
    got_outer, got_inner = Collected(), Collected()
    sources = [
        FileSource(got_outer, [str(outer)], exclude=["*.tmp"], quiet_s=0.3, hub=hub),
        FileSource(got_inner, [str(inner)], quiet_s=0.3, hub=hub),
    ]
    for source in sources:
        source.start()
    try:
        wait_for(lambda: all("fanotify" in source.health()["message"] for source in sources), message="marks up")
        (outer / "own.txt").write_text("the agent's own write")
        children = [write_in_child(p) for p in (outer / "scratch.tmp", tmp_path / "Elsewhere" / "x.txt", inner / "plan.txt", outer / "last.txt")]
        for child in children:
            stop_child(child)
        wait_for(lambda: got_outer.files(outer / "last.txt") and got_inner.files(inner / "plan.txt"), message="the last writes")
        assert [w.path for w in got_outer.files()] == [str(outer / "last.txt")]
        assert [w.path for w in got_inner.files()] == [str(inner / "plan.txt")]
    finally:
        for source in sources:
            source.stop()
    assert hub.describe() == "no marks yet"  # both sources gone: their marks went with them


def test_a_busy_folder_outside_is_dropped_by_the_kernel_until_it_may_matter(tmp_path: Path, hub: FanotifyHub) -> None:
    """Many writes in one folder under no root: the kernel is told to drop them (ignore mark). Once a
    folder moves (it may have moved under a root) or a root is added, every folder is reported again."""
    root, hot, other = tmp_path / "Documents", tmp_path / "build", tmp_path / "cache"
    for folder in (root, hot, other):
        folder.mkdir()
    got, got_hot = Collected(), Collected()
    sources = [FileSource(got, [str(root)], quiet_s=0.3, hub=hub)]
    sources[0].start()
    try:
        wait_for(lambda: "marks on" in sources[0].health()["message"], message="mark up")
        script = "import sys\nfor i in range(100):\n    open(f'{sys.argv[1]}/o{i}.o', 'w').write(str(i))\n"
        for folder in (hot, other):
            subprocess.run([sys.executable, "-c", script, str(folder)], check=True, timeout=60)
        wait_for(lambda: hub.ignoring(str(hot)) and hub.ignoring(str(other)), message="both busy folders ignored")
        subprocess.run(["mv", str(hot), str(root / "build")], check=True, timeout=30)
        wait_for(lambda: not hub.ignoring(str(other)), message="ignores dropped after a folder moved")
        stop_child(write_in_child(root / "build" / "late.txt"))
        wait_for(lambda: got.files(root / "build" / "late.txt"), message="a write in the folder moved in")
        subprocess.run([sys.executable, "-c", script, str(other)], check=True, timeout=60)
        wait_for(lambda: hub.ignoring(str(other)), message="the other busy folder ignored again")
        sources.append(FileSource(got_hot, [str(other)], quiet_s=0.3, hub=hub))
        sources[1].start()
        wait_for(lambda: not hub.ignoring(str(other)), message="ignores dropped for a new root")
        stop_child(write_in_child(other / "new.txt"))
        wait_for(lambda: got_hot.files(other / "new.txt"), message="a write in the new root")
    finally:
        for source in sources:
            source.stop()


def test_a_stick_without_file_handles_is_watched_through_descriptors(tmp_path: Path, hub: FanotifyHub) -> None:
    """exFAT through FUSE has no file handles: FID marks are refused, descriptor-mode marks still name the writer."""
    with LoopMounts(tmp_path) as mounts:
        mounts.mount_exfat_fuse(mounts.image("stick.img", fs="exfat"), tmp_path / "stick")
        collected = Collected()
        source = FileSource(collected, [str(tmp_path / "stick")], quiet_s=0.3, hub=hub, channel="usb")
        source.start()
        try:
            wait_for(lambda: "descriptor-mode marks" in source.health()["message"], message="descriptor mark up")
            target = tmp_path / "stick" / "copy.txt"
            child = write_in_child(target)
            try:
                (work,) = wait_for(lambda: collected.files(target), message="the write on the stick")
                assert work.process is not None and work.process["pid"] == child.pid
            finally:
                stop_child(child)
        finally:
            source.stop()


def test_a_stick_pulled_leaves_the_other_roots_watched(tmp_path: Path, hub: FanotifyHub) -> None:
    """The stick's mount point names the filesystem below once it is unmounted: dropping the stick's
    mark must not take bits off that filesystem's mark, which the home folder's root needs."""
    home = tmp_path / "Documents"
    home.mkdir()
    got_home, got_stick = Collected(), Collected()
    with LoopMounts(tmp_path) as mounts:
        stick = mounts.mount_loop(mounts.image("stick.img"), tmp_path / "stick")
        home_source = FileSource(got_home, [str(home)], quiet_s=0.3, hub=hub)
        stick_source = FileSource(got_stick, [str(stick)], quiet_s=0.3, hub=hub, channel="usb", writes=WriteWatch())
        for source in (home_source, stick_source):
            source.start()
        try:
            wait_for(lambda: hub.describe() == "filesystem marks on 2 filesystem(s)", message="both marks")
            mounts.umount(stick)
            stick_source.stop()
            assert hub.describe() == "filesystem marks on 1 filesystem(s)"
            stop_child(write_in_child(home / "after.txt"))
            wait_for(lambda: got_home.files(home / "after.txt"), message="a write at home after the stick went")
        finally:
            stick_source.stop()
            home_source.stop()


def test_without_fanotify_the_sources_keep_inotify_and_say_why(tmp_path: Path) -> None:
    assert open_hub("inotify") == (None, "inotify (configured)")
    # The same call in a process without CAP_SYS_ADMIN: fanotify_init is refused there.
    probe = "from agent.sources.fanotify_hub import open_hub\nfor backend in ('auto', 'fanotify'):\n    print(open_hub(backend)[1])\n"
    denied = subprocess.run(
        ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", sys.executable, "-c", probe],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    why = denied.stdout.splitlines()
    assert (denied.returncode, why) == (0, ["inotify (fanotify not permitted: EPERM)", "inotify (fanotify configured but not permitted: EPERM)"]), denied.stderr
    root = tmp_path / "Documents"
    root.mkdir()
    collected = Collected()
    source = FileSource(collected, [str(root)], quiet_s=0.3, backend=why[0])
    source.start()
    try:
        wait_for(lambda: "inotify (fanotify not permitted: EPERM)" in source.health()["message"], message="watch up")
        child = write_in_child(root / "plain.txt")
        stop_child(child)
        (work,) = wait_for(lambda: collected.files(root / "plain.txt"), message="the close")
        assert work.process is None
    finally:
        source.stop()


# The daemon ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "inotify"])
def test_a_cp_into_a_watched_folder_is_spooled_with_its_writer(tmp_path: Path, rules_dir: Path, backend: str) -> None:
    agent = Agent(write_config(tmp_path, rules_dir, files=f'report_clean = true\nbackend = "{backend}"'))
    try:
        files = wait_for(lambda: agent.status().get("sources", {}).get("files", {}), timeout=15, message="files health")
        wait_for(lambda: "watching 1 folder" in agent.status()["sources"]["files"]["message"], timeout=15, message="watch up")
        files = agent.status()["sources"]["files"]
        expected = "fanotify: filesystem marks on 1 filesystem(s)" if backend == "auto" else "inotify (configured)"
        assert files["backend"] == expected and expected in files["message"]
        shown = run_cli("status", "--config", str(agent.config), check=True).stdout.decode()
        assert f"files:     ok: watching 1 folder(s) with {expected}" in shown
        small = tmp_path / "export.txt"
        small.write_text("quarterly figures\n")
        target = tmp_path / "Desktop" / "export.txt"
        subprocess.run(["cp", str(small), str(target)], check=True, timeout=60)
        (event,) = wait_for(lambda: [e for e in agent.events() if e.get("path") == str(target)], timeout=30, message="the event")
        if backend == "auto":
            assert event["process"]["exe"] == os.path.realpath(shutil.which("cp") or "cp")
            assert event["process"]["ppid"] in (os.getpid(), None)  # None: gone before even its start was read
        else:
            assert event["process"] is None
    finally:
        assert agent.stop(signal.SIGTERM) == 0


# What the packaged service gets (installer/linux/dlp-agent.service.in): another user, two capabilities.
AS_THE_SERVICE = [
    "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
    "--inh-caps=-all,+dac_read_search,+sys_admin", "--ambient-caps=-all,+dac_read_search,+sys_admin",
    "--bounding-set=-all,+dac_read_search,+sys_admin",
]  # fmt: skip
SERVICE_PROBE = """
import json, sys, time
from agent.sources.fanotify_hub import open_hub
from agent.sources.files import FileSource, WriteWatch
hub, why = open_hub("auto")
print(why, flush=True)
got = []
source = FileSource(got.append, [sys.argv[1]], quiet_s=0.3, hub=hub)
hub.start()
source.start()
deadline = time.monotonic() + 20
while "marks on" not in source.health()["message"] and time.monotonic() < deadline:
    time.sleep(0.05)
print(source.health()["message"], flush=True)
while not got and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps(got[0].process if got else None), flush=True)
source.stop()
hub.stop()
hub.close()
"""


def test_the_service_s_two_capabilities_are_enough_for_marks_and_paths(tmp_path: Path) -> None:
    """As an unprivileged user with CAP_DAC_READ_SEARCH and CAP_SYS_ADMIN only: marks, handles opened back
    into paths, and the writer's command line, user and parents. Its /proc exe link needs ptrace rights
    (CAP_SYS_PTRACE, not granted) over another user's process; the program seen starting names it instead."""
    root = tmp_path / "private"
    root.mkdir(mode=0o700)  # root's own: only CAP_DAC_READ_SEARCH lets the service look inside
    os.chmod(tmp_path, 0o700)
    probe = subprocess.Popen(
        [*AS_THE_SERVICE, sys.executable, "-c", SERVICE_PROBE, str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    try:
        assert probe.stdout is not None
        assert probe.stdout.readline().strip() == "fanotify", probe.stderr.read() if probe.stderr else ""
        assert "with fanotify: filesystem marks on 1 filesystem(s)" in probe.stdout.readline()
        child = write_in_child(root / "secret.txt")
        try:
            process = json.loads(probe.stdout.readline())
        finally:
            stop_child(child)
        assert process["pid"] == child.pid and str(root / "secret.txt") in process["cmdline"]
        assert process["user"] == "root" and process["parents"][0]["pid"] == os.getpid()
        # No ptrace rights over the writer: its /proc exe link is closed to the service, but its start was seen.
        assert process["exe"] == os.path.realpath(sys.executable)
        assert probe.wait(30) == 0
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
        for stream in (probe.stdout, probe.stderr):
            if stream is not None:
                stream.close()
