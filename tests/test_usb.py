"""USB volumes: the mount table, the removable policy and the source, on real loop-mounted images."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from agent.sources import mounts
from agent.sources.mounts import Mount, MountChange, MountWatcher, parse_mounts, read_proc_mounts
from agent.sources.removable import RemovablePolicy, SysfsProbe
from agent.sources.usb import UsbSource
from agent.sources.work import Device, DeviceChange, Work
from tests.loopdev import LoopMounts
from tests.waiting import wait_for

# Far longer than any wait below: a change seen in time was seen through the kernel's POLLPRI signal.
SLOW_FALLBACK = 30.0


class Recorder:
    """Collects what the source emits and the callbacks it makes."""

    def __init__(self) -> None:
        self.emitted: list[Work] = []
        self.mounted: list[Device] = []
        self.unmounted: list[Device] = []

    def emit(self, work: Work) -> bool:
        self.emitted.append(work)
        return True

    def of_type(self, kind: str) -> list[DeviceChange]:
        return [w for w in self.emitted if isinstance(w, DeviceChange) and w.type == kind]


@pytest.fixture
def loop_mounts(tmp_path: Path) -> Iterator[LoopMounts]:
    with LoopMounts(tmp_path) as mounts:
        yield mounts


@pytest.fixture
def removable_root(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def start_source(removable_root: Path) -> Iterator[Callable[..., tuple[UsbSource, Recorder]]]:
    sources: list[UsbSource] = []

    def start(interval: float = SLOW_FALLBACK) -> tuple[UsbSource, Recorder]:
        rec = Recorder()
        source = UsbSource(
            rec.emit,
            RemovablePolicy([str(removable_root)]),
            MountWatcher(interval=interval),
            on_mount=rec.mounted.append,
            on_unmount=rec.unmounted.append,
        )
        sources.append(source)
        source.start()
        assert source.wait_ready(10), "the source never handled the mounts present at start"
        return source, rec

    yield start
    for source in sources:
        source.stop()
        assert not source.is_alive(), "the usb source thread outlived stop()"


class WatcherThread:
    """Runs ``MountWatcher.changes()`` in a thread the way a source would, keeping every change."""

    def __init__(self, watcher: MountWatcher):
        self.watcher = watcher
        self.changes: list[MountChange] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        wait_for(lambda: self.changes, timeout=10, message="the initial mount table")

    def _run(self) -> None:
        for change in self.watcher.changes():
            self.changes.append(change)

    def saw_added(self, mountpoint: Path) -> bool:
        return any(m.mountpoint == str(mountpoint) for c in self.changes[1:] for m in c.added)

    def close(self) -> None:
        self.watcher.close()
        self._thread.join(5)
        assert not self._thread.is_alive()


def test_parse_mounts_decodes_octal_escapes() -> None:
    data = b"/dev/sdb1 /media/me/MY\\040STICK vfat rw,nosuid 0 0\nnone /a\\011b\\134c\\012d tmpfs rw 0 0\n"
    assert parse_mounts(data) == [
        Mount("/dev/sdb1", "/media/me/MY STICK", "vfat", ("rw", "nosuid")),
        Mount("none", "/a\tb\\c\nd", "tmpfs", ("rw",)),
    ]


def test_real_mount_table_gives_paths_with_spaces(loop_mounts: LoopMounts, tmp_path: Path) -> None:
    target = loop_mounts.mount_tmpfs(tmp_path / "with space")
    (mount,) = [m for m in read_proc_mounts() if m.mountpoint == str(target)]
    assert mount.fstype == "tmpfs" and "rw" in mount.options


def test_watcher_is_woken_by_the_kernel_not_the_fallback(loop_mounts: LoopMounts, tmp_path: Path) -> None:
    watcher = WatcherThread(MountWatcher(interval=SLOW_FALLBACK))
    try:
        assert watcher.changes[0].initial
        assert watcher.watcher.health()["state"] == "ok"
        target = loop_mounts.mount_tmpfs(tmp_path / "signalled")
        wait_for(lambda: watcher.saw_added(target), timeout=SLOW_FALLBACK / 3, message="POLLPRI on the mount table")
        loop_mounts.umount(target)
        wait_for(
            lambda: any(m.mountpoint == str(target) for c in watcher.changes for m in c.removed),
            timeout=SLOW_FALLBACK / 3,
            message="the unmount",
        )
    finally:
        watcher.close()


class RecordingPoll:
    """``select.poll`` that keeps what each ``poll()`` returned and the timeout it was given."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self.timeouts: list[float | None] = []
        self.signals = 0  # returns that carried the mount table's POLLPRI

    def register(self, fd: int, eventmask: int = select.POLLIN) -> None:
        self._poll.register(fd, eventmask)

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        self.timeouts.append(timeout)
        ready = self._poll.poll(timeout)
        self.signals += any(event & select.POLLPRI for _, event in ready)
        return ready


def test_watcher_reads_the_table_only_when_the_kernel_signals(
    loop_mounts: LoopMounts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fallback interval this short would re-read the table dozens of times during the mount below.
    polls: list[RecordingPoll] = []
    reads: list[str] = []
    real_read = mounts.read_proc_mounts

    def counting_read(path: str = mounts.PROC_MOUNTS) -> list[Mount]:
        reads.append(path)
        return real_read(path)

    def recording_poll() -> RecordingPoll:
        polls.append(RecordingPoll())
        return polls[-1]

    monkeypatch.setattr(mounts, "read_proc_mounts", counting_read)
    watcher = WatcherThread(MountWatcher(interval=0.01, poll_factory=recording_poll))
    try:
        health = watcher.watcher.health()
        assert health["state"] == "ok" and "no timed re-read" in health["message"], health
        target = loop_mounts.mount_tmpfs(tmp_path / "signalled only")
        wait_for(lambda: watcher.saw_added(target), message="POLLPRI on the mount table")
        (poll,) = polls
        assert set(poll.timeouts) == {None}, "the watcher set a timeout on its wait for the kernel"
        # The first read, then one per signal (other mounts on this machine may signal too): none timed.
        wait_for(lambda: len(reads) == 1 + poll.signals, message="a read for every signal and no other")
    finally:
        watcher.close()


def test_watcher_falls_back_to_periodic_reads_when_it_cannot_poll(loop_mounts: LoopMounts, tmp_path: Path) -> None:
    def no_poll() -> NoReturn:
        raise OSError(38, "Function not implemented")

    watcher = WatcherThread(MountWatcher(interval=0.05, poll_factory=no_poll))
    try:
        health = watcher.watcher.health()
        assert health["state"] == "degraded" and "cannot poll /proc/self/mounts" in health["message"]
        assert "re-reading every 0.05s" in health["message"]
        target = loop_mounts.mount_tmpfs(tmp_path / "periodic")
        wait_for(lambda: watcher.saw_added(target), message="the periodic re-read")
    finally:
        watcher.close()


def test_ext4_stick_under_a_removable_root_is_reported(
    loop_mounts: LoopMounts, removable_root: Path, start_source
) -> None:
    source, rec = start_source()
    image = loop_mounts.image("stick.img", "ext4", label="BACKUP")
    stick = loop_mounts.mount_loop(image, removable_root / "STICK")

    (change,) = wait_for(lambda: rec.of_type("usb.mount"), message="usb.mount")
    device = change.device
    assert device.mountpoint == str(stick)
    assert device.fstype == "ext4"
    assert device.device is not None and device.device.startswith("/dev/loop")
    assert device.bus == "loop" and device.serial is None
    assert device.label == "BACKUP"
    assert device.size_bytes and 40 * 2**20 < device.size_bytes <= 64 * 2**20
    assert wait_for(lambda: rec.mounted) == [device]
    assert source.devices() == [device]
    assert source.health()["state"] == "ok" and source.health()["devices"] == 1

    loop_mounts.umount(stick)
    (gone,) = wait_for(lambda: rec.of_type("usb.unmount"), message="usb.unmount")
    assert gone.device == device
    assert wait_for(lambda: rec.unmounted) == [device]
    assert source.devices() == []


def test_exfat_through_fuse_is_reported_as_fuseblk(loop_mounts: LoopMounts, removable_root: Path, start_source) -> None:
    image = loop_mounts.image("exfat.img", "exfat", label="CARD")
    _, rec = start_source()
    loop = loop_mounts.mount_exfat_fuse(image, removable_root / "CARD")

    (change,) = wait_for(lambda: rec.of_type("usb.mount"), message="usb.mount")
    device = change.device
    assert (device.mountpoint, device.fstype, device.device) == (str(removable_root / "CARD"), "fuseblk", loop)
    assert device.label == "CARD" and device.bus == "loop"
    assert device.size_bytes and device.size_bytes > 40 * 2**20
    assert wait_for(lambda: rec.mounted) == [device]

    loop_mounts.umount(removable_root / "CARD")
    wait_for(lambda: rec.of_type("usb.unmount"), message="usb.unmount")
    assert wait_for(lambda: rec.unmounted) == [device]


def test_mounts_outside_the_roots_and_pseudo_filesystems_are_not_removable(
    loop_mounts: LoopMounts, removable_root: Path, tmp_path: Path, start_source
) -> None:
    _, rec = start_source()
    elsewhere = loop_mounts.mount_loop(loop_mounts.image("disk.img"), tmp_path / "elsewhere")
    scratch = loop_mounts.mount_tmpfs(removable_root / "scratch")
    # Mounted last: once it is reported, the two before it have been seen and passed over.
    stick = loop_mounts.mount_loop(loop_mounts.image("stick.img"), removable_root / "STICK")

    wait_for(lambda: rec.of_type("usb.mount"), message="usb.mount")
    assert [c.device.mountpoint for c in rec.emitted] == [str(stick)]
    policy = RemovablePolicy([str(removable_root)])
    by_mountpoint = {m.mountpoint: m for m in read_proc_mounts()}
    assert not policy.is_removable(by_mountpoint[str(elsewhere)])
    assert not policy.is_removable(by_mountpoint[str(scratch)])
    assert not policy.is_removable(by_mountpoint["/proc"])
    assert policy.is_removable(by_mountpoint[str(stick)])


def test_volumes_present_at_start_are_watched_but_not_reported(
    loop_mounts: LoopMounts, removable_root: Path, start_source
) -> None:
    stick = loop_mounts.mount_loop(loop_mounts.image("stick.img"), removable_root / "EARLY")
    _, rec = start_source()
    assert [d.mountpoint for d in rec.mounted] == [str(stick)]
    assert rec.emitted == []

    loop_mounts.umount(stick)
    wait_for(lambda: rec.of_type("usb.unmount"), message="usb.unmount")
    assert rec.unmounted == rec.mounted


def test_a_failing_callback_does_not_stop_reporting(loop_mounts: LoopMounts, removable_root: Path) -> None:
    rec = Recorder()

    def broken(device: Device) -> None:
        raise RuntimeError("watch could not start")

    source = UsbSource(
        rec.emit, RemovablePolicy([str(removable_root)]), MountWatcher(SLOW_FALLBACK), on_mount=broken
    )
    source.start()
    try:
        assert source.wait_ready(10)
        stick = loop_mounts.mount_loop(loop_mounts.image("stick.img"), removable_root / "STICK")
        wait_for(lambda: rec.of_type("usb.mount"), message="usb.mount")
        loop_mounts.umount(stick)
        wait_for(lambda: rec.of_type("usb.unmount"), message="usb.unmount after a failed on_mount")
        assert source.is_alive()
    finally:
        source.stop()


def test_stop_returns_promptly_while_waiting_on_the_kernel(start_source) -> None:
    source, _ = start_source(interval=SLOW_FALLBACK)
    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 2.0
    assert not source.is_alive()
    source.stop()  # twice is harmless


def test_stop_before_start_and_closing_an_idle_watcher_are_harmless(removable_root: Path) -> None:
    source = UsbSource(lambda work: None, RemovablePolicy([str(removable_root)]), MountWatcher(SLOW_FALLBACK))
    source.stop()
    watcher = MountWatcher(SLOW_FALLBACK)
    watcher.close()
    assert [c.initial for c in watcher.changes()] == []


def _fake_sysfs(root: Path) -> Path:
    """A sysfs tree as on a laptop with a USB stick, an SD card reader and an internal disk.

    This machine has no such hardware, so the one branch that needs it reads a copy of the real layout.
    """
    sys_root = root / "sys"
    (sys_root / "class" / "block").mkdir(parents=True)

    def disk(scsi_dir: Path, name: str, removable: str, **scsi: str) -> Path:
        scsi_dir.mkdir(parents=True)
        for key, value in scsi.items():
            (scsi_dir / key).write_text(value + "\n")
        disk_dir = scsi_dir / "block" / name
        disk_dir.mkdir(parents=True)
        (disk_dir / "removable").write_text(removable + "\n")
        (disk_dir / "device").symlink_to(os.path.relpath(scsi_dir, disk_dir))
        (sys_root / "class" / "block" / name).symlink_to(os.path.relpath(disk_dir, sys_root / "class" / "block"))
        return disk_dir

    usb_dev = sys_root / "devices/pci0000:00/0000:00:14.0/usb1/1-2"
    usb_dev.mkdir(parents=True)
    usb_attributes = {"idVendor": "0781", "idProduct": "55A7", "manufacturer": "SanDisk", "product": "Cruzer Blade", "serial": "4C53"}
    for key, value in usb_attributes.items():
        (usb_dev / key).write_text(value + "\n")
    stick = disk(usb_dev / "1-2:1.0/host3/target3:0:0/3:0:0:0", "sdx", "0", vendor="SanDisk ", model="Cruzer  ")
    (stick / "sdx1").mkdir()
    (stick / "sdx1" / "partition").write_text("1\n")
    (sys_root / "class" / "block" / "sdx1").symlink_to(os.path.relpath(stick / "sdx1", sys_root / "class" / "block"))
    pci = sys_root / "devices/pci0000:00"
    disk(pci / "0000:00:1d.0/host0/target0:0:0/0:0:0:0", "sdy", "1", vendor="Generic", model="SD Reader")
    disk(pci / "0000:00:17.0/ata1/host1/target1:0:0/1:0:0:0", "sdz", "0", model="INTERNAL SSD")
    return sys_root


def test_sysfs_usb_bus_and_removable_flag(tmp_path: Path) -> None:
    probe = SysfsProbe(sys_root=str(_fake_sysfs(tmp_path)), by_label=str(tmp_path / "no-udev"), blkid=None)
    policy = RemovablePolicy([str(tmp_path / "media")], probe=probe)

    usb = Mount("/dev/sdx1", "/mnt/stick", "vfat", ("rw",))
    assert policy.is_removable(usb)  # on USB although its removable flag says 0
    device = policy.identify(usb)
    assert (device.vendor, device.model, device.serial, device.bus) == ("SanDisk", "Cruzer Blade", "4C53", "usb")
    assert (device.vendor_id, device.product_id) == ("0781", "55a7"), "USB ids as device policies match them: lower-case"

    reader = Mount("/dev/sdy", "/mnt/card", "vfat", ("rw",))
    assert policy.is_removable(reader)
    device = policy.identify(reader)
    assert (device.vendor, device.model, device.serial, device.bus) == ("Generic", "SD Reader", None, None)
    assert (device.vendor_id, device.product_id) == (None, None)

    assert not policy.is_removable(Mount("/dev/sdz", "/data", "ext4", ("rw",)))
    assert not policy.is_removable(Mount("/dev/sdx1", "/mnt/stick-tmp", "tmpfs", ("rw",)))
