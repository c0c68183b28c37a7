"""Time from mount to read-only / blocked: how long a stick not on the allowed list stays writable.

Usage (root): python bench/device_control.py [--rounds 20]

The agent's own pieces run in this process as the daemon wires them (mount table watcher, USB
source, device guard, fanotify permission group) with a device policy of ``read-only`` or
``block`` and nothing allowed. Each round mounts a loop image (ext4 through the kernel, exFAT
through FUSE) under the removable root and times, from the moment ``mount`` returned, until the
guard had carried the action out (the ``usb.readonly`` / ``usb.blocked`` change handed on). The
volume is visible a little before ``mount`` returns, so the "mount command" column is the most
the true window can be longer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402

from agent.device_guard import DeviceGuard  # noqa: E402
from agent.device_policy import PolicyHolder, verify  # noqa: E402
from agent.sources.mounts import MountWatcher  # noqa: E402
from agent.sources.removable import RemovablePolicy  # noqa: E402
from agent.sources.usb import UsbSource  # noqa: E402
from agent.sources.work import DeviceChange, Work  # noqa: E402
from agent.volume_control import OpenDenier  # noqa: E402

TIMEOUT_S = 10.0


def run(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout.strip()


def policy(action: str) -> PolicyHolder:
    key = Ed25519PrivateKey.generate()
    text = json.dumps({"format": 1, "vendor": "bench", "version": 1, "issued_at": "", "action": action, "allowed": [], "exceptions": []})
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return PolicyHolder(verify(text, key.sign(text.encode()).hex(), public_key_hex=public, vendor="bench"))


class Timer:
    """Records when each enforcement change was handed on."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.done = threading.Condition()

    def emit(self, work: Work) -> bool:
        if isinstance(work, DeviceChange) and work.enforcement is not None and work.enforcement["action"] != "allow":
            with self.done:
                self.seen[work.device.mountpoint] = time.perf_counter()
                self.done.notify_all()
        return True

    def wait(self, mountpoint: str) -> float:
        with self.done:
            if not self.done.wait_for(lambda: mountpoint in self.seen, TIMEOUT_S):
                raise RuntimeError(f"{mountpoint} was never acted on")
            return self.seen.pop(mountpoint)


def mount(fs: str, image: str, target: str) -> tuple[float, str | None]:
    """Mount; the time ``mount`` returned, and the loop device to detach (FUSE)."""
    if fs == "ext4":
        run("mount", "-o", "loop", image, target)
        return time.perf_counter(), None
    loop = run("losetup", "-f", "--show", image)
    run("mount.exfat-fuse", loop, target)
    return time.perf_counter(), loop


def unmount(target: str, loop: str | None) -> None:
    while any(line.split()[1] == target for line in open("/proc/self/mounts")):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    if loop is not None:
        subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)


def rounds(fs: str, action: str, count: int, work: str) -> tuple[list[float], list[float]]:
    image = os.path.join(work, f"{fs}.img")
    if not os.path.exists(image):
        run("truncate", "-s", "64M", image)
        run("mkfs.ext4", "-q", "-F", image) if fs == "ext4" else run("mkfs.exfat", image)
    media = os.path.join(work, "media")
    target = os.path.join(media, f"{fs}-{action}")
    os.makedirs(target, exist_ok=True)
    timer = Timer()
    denier = OpenDenier()
    guard = DeviceGuard(policy(action), timer.emit, denier)
    source = UsbSource(timer.emit, RemovablePolicy([media]), MountWatcher(interval=30.0), admit=guard.admit)
    denier.start()
    source.start()
    source.wait_ready(10)
    after_mount, command = [], []
    try:
        for _ in range(count):
            started = time.perf_counter()
            returned, loop = mount(fs, image, target)
            enforced = timer.wait(target)
            after_mount.append(max(0.0, enforced - returned) * 1000)
            command.append((returned - started) * 1000)
            unmount(target, loop)
    finally:
        source.stop()
        denier.stop()
    return after_mount, command


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (mount, fanotify)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)  # each round's "remounted read-only" / "blocked" is expected
    work = tempfile.mkdtemp(prefix="dlp-bench-devices-")
    print(f"{'filesystem':<16} {'action':<10} {'rounds':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mount cmd p50 ms':>17}")
    try:
        for fs, label in (("ext4", "ext4 (kernel)"), ("exfat", "exFAT (FUSE)")):
            for action in ("read-only", "block"):
                after, command = rounds(fs, action, args.rounds, work)
                print(
                    f"{label:<16} {action:<10} {len(after):>6} {statistics.median(after):>8.1f} {percentile(after, 0.99):>8.1f}"
                    f" {max(after):>8.1f} {statistics.median(command):>17.1f}"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
