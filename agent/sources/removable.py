"""Which mounts are removable volumes, and what device each one is."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import Protocol

import psutil

from agent.sources.mounts import Mount
from agent.sources.work import Device

log = logging.getLogger(__name__)

# Kernel and memory filesystems: never a volume someone can carry away, whatever their mountpoint.
PSEUDO_FSTYPES = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts", "devtmpfs",
        "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "overlay", "proc", "pstore", "ramfs",
        "rpc_pipefs", "securityfs", "selinuxfs", "sysfs", "tmpfs", "tracefs",
    }
)  # fmt: skip
BLKID_TIMEOUT = 2.0
_UDEV_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


@dataclasses.dataclass(frozen=True)
class BlockFacts:
    """What the operating system says about the device behind a mount; unknown fields are None."""

    removable: bool = False
    bus: str | None = None
    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    vendor_id: str | None = None
    product_id: str | None = None


class DeviceProbe(Protocol):
    """One per platform: looks a mount's device up in whatever the OS offers."""

    def facts(self, mount: Mount) -> BlockFacts: ...

    def label(self, mount: Mount) -> str | None: ...


class Usage(Protocol):
    """The part of ``psutil.disk_usage``'s answer that is used."""

    @property
    def total(self) -> int: ...


class SysfsProbe:
    """Linux: the block device's sysfs entry, its USB ancestor, /dev/disk/by-label and blkid.

    Args:
        sys_root: where sysfs is mounted.
        by_label: the udev label links, absent on machines without udev.
        blkid: path of the blkid program, None when there is none.
    """

    def __init__(
        self,
        sys_root: str = "/sys",
        by_label: str = "/dev/disk/by-label",
        blkid: str | None = shutil.which("blkid"),
    ):
        self._sys = os.path.realpath(sys_root)
        self._by_label = by_label
        self._blkid = blkid

    def facts(self, mount: Mount) -> BlockFacts:
        entry = self._sysfs_entry(mount.device)
        if entry is None:
            return BlockFacts()
        disk = os.path.dirname(entry) if os.path.exists(os.path.join(entry, "partition")) else entry
        on_usb = "/usb" in disk[len(self._sys) :]
        usb = self._usb_ancestor(disk) if on_usb else None
        scsi = os.path.join(disk, "device")
        if usb:
            vendor, model, serial, vendor_id, product_id = (_read(usb, n) for n in ("manufacturer", "product", "serial", "idVendor", "idProduct"))
        else:
            vendor, model, serial, vendor_id, product_id = None, None, None, None, None
        return BlockFacts(
            removable=_read(disk, "removable") == "1" or on_usb,
            bus="usb" if on_usb else "loop" if os.path.isdir(os.path.join(disk, "loop")) else None,
            vendor=vendor or _read(scsi, "vendor"),
            model=model or _read(scsi, "model"),
            serial=serial or _read(scsi, "serial"),
            vendor_id=vendor_id.lower() if vendor_id else None,
            product_id=product_id.lower() if product_id else None,
        )

    def _sysfs_entry(self, device: str) -> str | None:
        """The resolved sysfs directory of a block device node, or None for anything else."""
        try:
            st = os.stat(device)
        except OSError:
            st = None
        if st is not None and stat.S_ISBLK(st.st_mode):
            # By device number, so /dev/mapper names and symlinked nodes resolve too.
            candidate = os.path.join(self._sys, "dev", "block", f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        elif st is None and device.startswith("/dev/"):
            # A node this process cannot see (another mount namespace, a test's sysfs): go by name.
            candidate = os.path.join(self._sys, "class", "block", os.path.basename(device))
        else:
            return None
        return os.path.realpath(candidate) if os.path.isdir(candidate) else None

    def _usb_ancestor(self, path: str) -> str | None:
        """The USB device directory (the one with ``idVendor``) above a block device."""
        while path.startswith(self._sys) and path != self._sys:
            if os.path.exists(os.path.join(path, "idVendor")):
                return path
            path = os.path.dirname(path)
        return None

    def label(self, mount: Mount) -> str | None:
        """The filesystem label: from udev's links where there is udev, else from blkid, else None."""
        device = mount.device
        if not device.startswith("/"):
            return None
        target = os.path.realpath(device)
        try:
            links = os.listdir(self._by_label)
        except OSError:
            links = []
        for name in links:
            if os.path.realpath(os.path.join(self._by_label, name)) == target:
                return _UDEV_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)
        if self._blkid is None or not os.path.exists(device):
            return None
        try:
            out = subprocess.run(
                # Not blkid's cache: it keeps a stick's label for whatever is next plugged in at that node.
                [self._blkid, "-c", "/dev/null", "-o", "value", "-s", "LABEL", device],
                capture_output=True,
                timeout=BLKID_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            log.debug("blkid %s: %s", device, e)
            return None
        return os.fsdecode(out.stdout).strip() or None


class PortableProbe:
    """Elsewhere: psutil marks removable drives in the mount options on Windows; nothing more is known."""

    def facts(self, mount: Mount) -> BlockFacts:
        return BlockFacts(removable="removable" in mount.options)

    def label(self, mount: Mount) -> str | None:
        return None


def default_probe(sys_root: str = "/sys") -> DeviceProbe:
    """Sysfs on Linux when it is mounted (at ``sys_root``: ``[usb] sysfs_root``); otherwise only what the mount table says."""
    if sys.platform.startswith("linux"):
        if os.path.isdir(os.path.join(sys_root, "class", "block")) or os.path.isdir(os.path.join(sys_root, "dev", "block")):
            return SysfsProbe(sys_root)
        log.warning("no %s/class/block: removable volumes are recognised only under the removable roots", sys_root)
    return PortableProbe()


class RemovablePolicy:
    """The one place that decides "is this mount a removable volume" and says which device it is.

    A mount is removable when its device says so (removable flag, USB bus) or when it sits under one of
    ``removable_roots``, the places a desktop mounts sticks (``/media``, ``/run/media``); pseudo
    filesystems never are.
    """

    def __init__(
        self,
        removable_roots: Iterable[str],
        *,
        probe: DeviceProbe | None = None,
        disk_usage: Callable[[str], Usage] = psutil.disk_usage,
    ):
        # Mount tables list canonical paths, so roots that are symlinks (macOS /var) must be resolved too.
        self._roots = [os.path.realpath(os.path.expanduser(r)) for r in removable_roots]
        self._probe = probe if probe is not None else default_probe()
        self._disk_usage = disk_usage

    def is_removable(self, mount: Mount) -> bool:
        if mount.fstype in PSEUDO_FSTYPES:
            return False
        return self._under_root(mount.mountpoint) or self._probe.facts(mount).removable

    def identify(self, mount: Mount) -> Device:
        pseudo = mount.fstype in PSEUDO_FSTYPES
        facts = BlockFacts() if pseudo else self._probe.facts(mount)
        try:
            size: int | None = self._disk_usage(mount.mountpoint).total
        except OSError:
            size = None  # unmounted again already, or unreadable
        return Device(
            mountpoint=mount.mountpoint,
            device=mount.device,
            fstype=mount.fstype,
            vendor=facts.vendor,
            model=facts.model,
            serial=facts.serial,
            label=None if pseudo else self._probe.label(mount),
            size_bytes=size,
            bus=facts.bus,
            vendor_id=facts.vendor_id,
            product_id=facts.product_id,
        )

    def _under_root(self, mountpoint: str) -> bool:
        return any(mountpoint != root and mountpoint.startswith(root.rstrip(os.sep) + os.sep) for root in self._roots)


def _read(directory: str, name: str) -> str | None:
    try:
        with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None
