"""Real filesystem images loop-mounted for tests, unmounted and detached even when a test fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from agent.sources.mounts import read_proc_mounts

# The program each helper needs, and the Debian package that ships it.
PACKAGES = {
    "mkfs.ext4": "e2fsprogs",
    "mkfs.exfat": "exfatprogs",
    "mount.exfat-fuse": "exfat-fuse",
    "fusermount3": "fuse3",
}
COMMAND_TIMEOUT = 60


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)


def _check(*args: str) -> str:
    proc = _run(*args)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def require_mount_rights() -> None:
    """Skip unless this process can loop-mount: root and a loop driver."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting filesystem images needs root")
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no loop device driver (/dev/loop-control is missing)")


def require_tools(*commands: str) -> None:
    """Install the packages behind missing commands with apt-get; skip if that cannot be done."""
    missing = [c for c in commands if shutil.which(c) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        pytest.skip(f"{', '.join(missing)} missing and no apt-get to install them")
    packages = sorted({PACKAGES[c] for c in missing})
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", *packages]
    # A stale package list is the usual reason an install fails; refresh it only then.
    if subprocess.run(install, capture_output=True, env=env, timeout=600, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600, check=False)
        subprocess.run(install, capture_output=True, env=env, timeout=600, check=False)
    still = [c for c in missing if shutil.which(c) is None]
    if still:
        pytest.skip(f"could not install {', '.join(packages)} for {', '.join(still)}")


def is_mounted(target: Path) -> bool:
    return any(m.mountpoint == str(target) for m in read_proc_mounts())


class LoopMounts:
    """Makes images and mounts them, remembering everything so ``cleanup()`` can undo it."""

    def __init__(self, workdir: Path):
        self._workdir = workdir
        self._targets: list[Path] = []
        self._loops: list[tuple[str, Path]] = []

    def __enter__(self) -> Self:
        require_mount_rights()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()

    def image(self, name: str, fs: str = "ext4", label: str | None = None, size: str = "64M") -> Path:
        path = self._workdir / name
        _check("truncate", "-s", size, str(path))
        if fs == "ext4":
            require_tools("mkfs.ext4")
            _check("mkfs.ext4", "-q", "-F", *(["-L", label] if label else []), str(path))
        elif fs == "exfat":
            require_tools("mkfs.exfat")
            _check("mkfs.exfat", *(["-L", label] if label else []), str(path))
        else:
            raise ValueError(fs)
        return path

    def mount_loop(self, image: Path, target: Path) -> Path:
        """``mount -o loop``: the kernel picks and frees the loop device itself."""
        target.mkdir(parents=True, exist_ok=True)
        self._targets.append(target)
        _check("mount", "-o", "loop", str(image), str(target))
        return target

    def attach(self, image: Path) -> str:
        """A loop device backed by ``image`` (detached at cleanup), for tests that need its number before mounting."""
        loop = _check("losetup", "-f", "--show", str(image))
        self._loops.append((loop, image))
        return loop

    def mount_device(self, device: str, target: Path) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        self._targets.append(target)
        _check("mount", device, str(target))
        return target

    def mount_exfat_fuse(self, image: Path, target: Path) -> str:
        """Attach a loop device and mount it through exfat-fuse (a ``fuseblk`` mount); returns the device."""
        require_tools("mount.exfat-fuse", "fusermount3")
        if not os.path.exists("/dev/fuse"):
            pytest.skip("no FUSE support (/dev/fuse is missing)")
        loop = _check("losetup", "-f", "--show", str(image))
        self._loops.append((loop, image))
        target.mkdir(parents=True, exist_ok=True)
        self._targets.append(target)
        _check("mount.exfat-fuse", loop, str(target))
        return loop

    def mount_tmpfs(self, target: Path) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        self._targets.append(target)
        _check("mount", "-t", "tmpfs", "-o", "size=1m", "dlp-test", str(target))
        return target

    def umount(self, target: Path) -> None:
        _check("umount", str(target))

    def cleanup(self) -> None:
        for target in reversed(self._targets):
            while is_mounted(target):
                # A lazy unmount still detaches a mount that something holds busy.
                if _run("umount", str(target)).returncode != 0 and _run("umount", "-l", str(target)).returncode != 0:
                    break
        for loop, image in self._loops:
            # Only while it still backs our image: a freed loop device may already serve someone else.
            if _backing_file(loop) == str(image):
                # Detaching one that a FUSE daemon still holds marks it to go when the daemon closes it.
                _run("losetup", "-d", loop)


def _backing_file(loop: str) -> str | None:
    try:
        return Path(f"/sys/class/block/{os.path.basename(loop)}/loop/backing_file").read_text().strip()
    except OSError:
        return None
