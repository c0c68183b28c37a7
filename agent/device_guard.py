"""Device control at mount time: the device policy's verdict on each removable volume, carried out.

An allowed device (or one with a live exception) is left alone; any other volume gets the
policy's action: ``audit`` (reported as always), ``read-only`` (the filesystem remounted
read-only) or ``block`` (every open denied, then unmounted); each action is an event with the
device's identity (``usb.readonly``, ``usb.blocked``). Volumes already mounted are decided again
whenever the policy changes or an exception expires, in both directions: a volume a newer
policy allows is made writable (when the agent made it read-only) or unblocked again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agent import events as contract
from agent import volume_control
from agent.device_policy import PolicyHolder, decide
from agent.sources.work import Device, DeviceChange, Emit

log = logging.getLogger(__name__)

_STRICTNESS = {"allow": 0, "audit": 0, "read-only": 1, "block": 2}


class DeviceGuard:
    """Decides and acts; one per agent, called from the USB source's thread and the policy updater's.

    Args:
        holder: the device policy in force.
        emit: where events of re-decisions go (at mount time the USB source emits them after ``usb.mount``).
        denier: the fanotify permission group that blocks volumes.
        before_block: called before a mounted volume is blocked (stop watching it: its files can no longer be opened).
        after_unblock: called once a blocked volume that is still mounted is allowed again (watch it).
    """

    def __init__(
        self,
        holder: PolicyHolder,
        emit: Emit,
        denier: volume_control.OpenDenier,
        *,
        before_block: Callable[[Device], None] = lambda device: None,
        after_unblock: Callable[[Device], None] = lambda device: None,
        clock: Callable[[], float] = time.time,
    ):
        self._holder = holder
        self._emit = emit
        self._denier = denier
        self._before_block = before_block
        self._after_unblock = after_unblock
        self._clock = clock
        self._lock = threading.RLock()
        self._applied: dict[str, str] = {}  # mountpoint -> action carried out: allow | audit | read-only | block
        self._made_read_only: set[str] = set()

    def admit(self, device: Device) -> tuple[dict[str, Any] | None, DeviceChange | None]:
        """A volume just seen mounted: the ``usb.mount`` event's enforcement (an allowed device says
        which rule allowed it) and the ``usb.readonly`` / ``usb.blocked`` change to emit after it."""
        with self._lock:
            action, allowed = decide(self._holder.policy, device, self._clock())
            return allowed, self._apply(device, action)

    def is_blocked(self, mountpoint: str) -> bool:
        with self._lock:
            return self._applied.get(mountpoint) == "block"

    def forget(self, device: Device) -> None:
        """The volume left the mount table. A block's mark stays: it goes with the filesystem itself,
        which other namespaces (the user's) may still have mounted."""
        with self._lock:
            self._applied.pop(device.mountpoint, None)
            self._made_read_only.discard(device.mountpoint)

    def redecide(self, devices: list[Device]) -> None:
        """Decide again for the volumes mounted now (a new policy, an expired exception)."""
        for device in devices:
            with self._lock:
                action, _ = decide(self._holder.policy, device, self._clock())
                before = self._applied.get(device.mountpoint, "audit")
                if _STRICTNESS[action] == _STRICTNESS[before]:
                    continue
                if _STRICTNESS[action] > _STRICTNESS[before]:
                    change = self._apply(device, action)
                else:
                    change = self._loosen(device, before, action)
            if change is not None and not self._emit(change):
                log.warning("%s of %s not reported: the work queue stayed full", change.type, device.mountpoint)

    def _apply(self, device: Device, action: str) -> DeviceChange | None:
        mountpoint = device.mountpoint
        self._applied[mountpoint] = action
        if action == "read-only":
            return DeviceChange(type=contract.USB_READONLY, device=device, enforcement=self._read_only(mountpoint))
        if action == "block":
            self._call(self._before_block, device)
            return DeviceChange(type=contract.USB_BLOCKED, device=device, enforcement=self._block(mountpoint))
        return None

    def _read_only(self, mountpoint: str) -> dict[str, Any]:
        version = self._holder.policy.version
        try:
            if volume_control.is_read_only(mountpoint):
                return _enforcement("read-only", True, f"already read-only; not an allowed device (device policy version {version})")
            volume_control.remount(mountpoint, read_only=True)
        except OSError as exc:
            log.error("cannot make %s read-only: %s", mountpoint, exc.strerror or exc)
            return _enforcement("read-only", False, f"remount failed: {exc.strerror or exc}")
        self._made_read_only.add(mountpoint)
        log.warning("%s remounted read-only: not an allowed device", mountpoint)
        return _enforcement("read-only", True, f"remounted read-only: not an allowed device (device policy version {version})")

    def _block(self, mountpoint: str) -> dict[str, Any]:
        version = self._holder.policy.version
        done: list[str] = []
        failed: list[str] = []
        try:
            self._denier.block(mountpoint)
            done.append("every open denied")
        except OSError as exc:
            failed.append(f"open denial failed: {exc.strerror or exc}")
        try:
            volume_control.lazy_unmount(mountpoint)
            done.append("unmounted")
        except OSError as exc:
            failed.append(f"unmount failed: {exc.strerror or exc}")
        log.warning("%s blocked: %s", mountpoint, "; ".join(done + failed))
        detail = "; ".join(done + failed) + f"; not an allowed device (device policy version {version})"
        return _enforcement("block", bool(done), detail)

    def _loosen(self, device: Device, before: str, action: str) -> DeviceChange | None:
        mountpoint = device.mountpoint
        if before == "block":
            try:
                self._denier.unblock(mountpoint)
            except OSError as exc:
                log.error("cannot unblock %s: %s", mountpoint, exc.strerror or exc)
                return None
            log.warning("%s unblocked by the device policy", mountpoint)
            self._applied[mountpoint] = action
            change = self._apply(device, action) if action == "read-only" else None
            self._call(self._after_unblock, device)
            return change
        if mountpoint in self._made_read_only:
            try:
                volume_control.remount(mountpoint, read_only=False)
            except OSError as exc:
                log.error("cannot make %s writable again: %s", mountpoint, exc.strerror or exc)
                return None
            self._made_read_only.discard(mountpoint)
            log.warning("%s writable again: allowed by the device policy", mountpoint)
        self._applied[mountpoint] = action
        return None

    def _call(self, callback: Callable[[Device], None], device: Device) -> None:
        try:
            callback(device)
        except Exception:  # watching is secondary to enforcing
            log.exception("device guard callback failed for %s", device.mountpoint)


def _enforcement(action: str, done: bool, detail: str) -> dict[str, Any]:
    return {"action": action, "mode": "enforce", "done": done, "detail": detail}
