"""Every source acts on whether its work was taken: what the full queue refused is counted in its health."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from agent.sources.clipboard import ClipboardSource
from agent.sources.files import FileSource
from agent.sources.mounts import Mount, MountChange
from agent.sources.removable import PortableProbe, RemovablePolicy
from agent.sources.usb import UsbSource
from agent.sources.work import Device, DeviceChange, FileWork, Work
from agent.supervisor import Supervisor
from tests.waiting import wait_for


class Queue:
    """An emit callback that refuses the first ``refuse`` items, as a full work queue does."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.taken: list[Work] = []
        self.offered = 0

    def __call__(self, work: Work) -> bool:
        self.offered += 1
        if self.offered <= self.refuse:
            return False
        self.taken.append(work)
        return True


def test_the_file_source_counts_refused_files_and_offers_them_again(tmp_path: Path) -> None:
    queue = Queue(refuse=1)
    source = FileSource(queue, [str(tmp_path)], quiet_s=0.2)
    source.start()
    try:
        wait_for(lambda: "1 folder" in source.health()["message"], message="watch up")
        target = tmp_path / "report.txt"
        target.write_text("draft")
        wait_for(lambda: queue.offered == 1, message="the file offered")
        health = source.health()
        assert health["state"] == "degraded" and "1 file(s) not scanned: the work queue was full" in health["message"]
        with open(target, "a"):
            pass  # closed again, unchanged: offered again as it was never taken
        wait_for(lambda: [w.path for w in queue.taken if isinstance(w, FileWork)] == [str(target)], message="taken at the next close")
    finally:
        source.stop()


def test_the_clipboard_source_counts_refused_changes() -> None:
    texts = iter(["there at start", "copied while watched"])
    last = ["there at start"]

    def paste() -> str:
        last[0] = next(texts, last[0])
        return last[0]

    queue = Queue(refuse=1)
    source = ClipboardSource(queue, interval_s=0.02, paste=paste)
    source.start()
    try:
        wait_for(lambda: queue.offered == 1, message="the copy offered")
        wait_for(lambda: source.health()["state"] == "degraded")
        assert "1 change(s) not scanned: the work queue was full" in source.health()["message"]
    finally:
        source.stop()


class FakeWatcher:
    """Mount-table snapshots to hand out, one list per run of ``changes()``; a run may end in a crash."""

    def __init__(self, runs: list[tuple[list[list[Mount]], bool]]) -> None:
        self._runs = iter(runs)
        self._closed = threading.Event()

    def health(self) -> dict[str, str]:
        return {"state": "ok", "message": "fake mount table"}

    def close(self) -> None:
        self._closed.set()

    def changes(self) -> Iterator[MountChange]:
        snapshots, crash = next(self._runs)
        previous: dict[tuple[str, str], Mount] = {}
        for index, snapshot in enumerate(snapshots):
            current = {m.key: m for m in snapshot}
            yield MountChange(
                added=tuple(m for k, m in current.items() if k not in previous),
                removed=tuple(m for k, m in previous.items() if k not in current),
                initial=index == 0,
            )
            previous = current
        if crash:
            raise RuntimeError("mount table went away")
        self._closed.wait()


class _Size:
    total = 1 << 30


def _usb(tmp_path: Path, watcher: FakeWatcher, queue: Queue, mounted: list[Device], unmounted: list[Device]) -> UsbSource:
    policy = RemovablePolicy([str(tmp_path)], probe=PortableProbe(), disk_usage=lambda path: _Size())
    return UsbSource(queue, policy, watcher, on_mount=mounted.append, on_unmount=unmounted.append)  # type: ignore[arg-type]


def test_the_usb_source_counts_refused_changes(tmp_path: Path) -> None:
    stick = Mount("/dev/sdz1", str(tmp_path / "STICK"), "vfat")
    queue = Queue(refuse=1)
    source = _usb(tmp_path, FakeWatcher([([[], [stick]], False)]), queue, [], [])
    source.start()
    try:
        wait_for(lambda: queue.offered == 1, message="usb.mount offered")
        health = source.health()
        assert health["state"] == "degraded" and "1 change(s) not reported: the work queue was full" in health["message"]
    finally:
        source.stop()


def test_a_restarted_usb_source_reports_what_changed_while_it_was_down(tmp_path: Path) -> None:
    old = Mount("/dev/sdy1", str(tmp_path / "OLD"), "vfat")
    new = Mount("/dev/sdz1", str(tmp_path / "NEW"), "vfat")
    queue = Queue(refuse=0)
    mounted: list[Device] = []
    unmounted: list[Device] = []
    source = _usb(tmp_path, FakeWatcher([([[old]], True), ([[new]], False)]), queue, mounted, unmounted)
    supervisor = Supervisor(backoff_start_s=0.01)
    supervisor.watch(source, "usb")
    source.start()
    try:
        wait_for(lambda: len(queue.taken) == 2, message="the unmount and the mount seen at the restart")
        changes = [(w.type, w.device.mountpoint) for w in queue.taken if isinstance(w, DeviceChange)]
        assert changes == [("usb.unmount", old.mountpoint), ("usb.mount", new.mountpoint)]
        assert [d.mountpoint for d in mounted] == [old.mountpoint, new.mountpoint]
        assert [d.mountpoint for d in unmounted] == [old.mountpoint]
        assert source.health()["state"] == "ok" and supervisor.health()["usb"]["deaths"] == 1
    finally:
        source.stop()
