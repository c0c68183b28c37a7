"""The USB source: reports removable volumes as they are mounted and unmounted."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from agent import events as contract
from agent.sources.mounts import Mount, MountChange, MountWatcher
from agent.sources.removable import RemovablePolicy
from agent.sources.work import Device, DeviceChange, Emit
from agent.threads import StoppableThread

log = logging.getLogger(__name__)

DeviceCallback = Callable[[Device], None]
Admit = Callable[[Device], "tuple[dict[str, Any] | None, DeviceChange | None]"]
"""Device control (agent/device_guard.py ``DeviceGuard.admit``): acts on a volume just mounted and returns
the ``usb.mount`` event's enforcement and the change to report after it (``usb.readonly``, ``usb.blocked``)."""


def _ignore(device: Device) -> None:
    """The default callback: nothing to start or stop."""


class UsbSource(StoppableThread):
    """Watches the mount table and emits ``usb.mount`` / ``usb.unmount`` for removable volumes.

    Volumes already mounted when the source starts are not emitted (nothing happened while we watched),
    but ``on_mount`` is still called for them, so that files written to a stick that was plugged in
    before the agent started are watched like any other. ``on_unmount`` is called once the volume has
    gone, with the same ``Device`` that ``on_mount`` got; stopping the source calls neither.

    Args:
        emit: where the ``DeviceChange`` items go.
        policy: decides which mounts are removable and identifies them.
        watcher: the mount table watcher; a default one (Linux: kernel signals; elsewhere re-read every 1 s) if None.
        on_mount: called with each removable volume that is or becomes mounted.
        on_unmount: called with each removable volume that went away.
        admit: device control, asked about each volume before ``on_mount`` (volumes present at start too).
    """

    def __init__(
        self,
        emit: Emit,
        policy: RemovablePolicy,
        watcher: MountWatcher | None = None,
        *,
        on_mount: DeviceCallback = _ignore,
        on_unmount: DeviceCallback = _ignore,
        admit: Admit | None = None,
        name: str = "usb-source",
    ):
        super().__init__(name=name)
        self._emit = emit
        self._policy = policy
        self._watcher = watcher if watcher is not None else MountWatcher()
        self._on_mount = on_mount
        self._on_unmount = on_unmount
        self._admit = admit
        self._lock = threading.Lock()
        self._present: dict[tuple[str, str], tuple[Mount, Device]] = {}
        self._ready = threading.Event()
        self._failure: str | None = None
        self._not_taken = 0  # mount and unmount changes emitted while the work queue stayed full

    def devices(self) -> list[Device]:
        """The removable volumes mounted now, as far as the source has seen."""
        with self._lock:
            return [device for _, device in self._present.values()]

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the volumes present at start have been handled; False on timeout."""
        return self._ready.wait(timeout)

    def health(self) -> dict[str, Any]:
        """``{"state": "ok"|"degraded", "message": str, "devices": int}``."""
        if self._failure is not None:
            return {"state": "degraded", "message": f"usb source stopped: {self._failure}", "devices": 0}
        health: dict[str, Any] = dict(self._watcher.health())
        health["devices"] = len(self.devices())
        if self._not_taken:
            health["state"] = "degraded"
            health["message"] = f"{health.get('message', '')}; {self._not_taken} change(s) not reported: the work queue was full"
        return health

    def on_stop(self) -> None:
        self._watcher.close()

    def run_loop(self) -> None:
        self._failure = None
        try:
            with contextlib.closing(self._watcher.changes()) as changes:
                for change in changes:
                    self._apply(self._since_last_run(change) if change.initial and self._ready.is_set() else change)
        except Exception as e:
            self._failure = f"{type(e).__name__}: {e}"
            raise

    def _since_last_run(self, snapshot: MountChange) -> MountChange:
        """After a restart, the first snapshot as changes against what the last run knew: volumes
        mounted or pulled while the loop was down were seen by nobody, so they are events now."""
        current = {mount.key: mount for mount in snapshot.added}
        with self._lock:
            known = {key: mount for key, (mount, _) in self._present.items()}
        return MountChange(
            added=tuple(mount for key, mount in current.items() if key not in known),
            removed=tuple(mount for key, mount in known.items() if key not in current),
        )

    def _apply(self, change: MountChange) -> None:
        # Removals first, so a volume swapped at the same mountpoint reads as out-then-in.
        for mount in change.removed:
            with self._lock:
                present = self._present.pop(mount.key, None)
            if present is not None:
                self._offer(DeviceChange(type=contract.USB_UNMOUNT, device=present[1]))
                self._call(self._on_unmount, present[1])
        for mount in change.added:
            device = self._identify(mount)
            if device is None:
                continue
            with self._lock:
                self._present[mount.key] = (mount, device)
            allowed, action = self._admitted(device)
            if not change.initial:
                self._offer(DeviceChange(type=contract.USB_MOUNT, device=device, enforcement=allowed))
            if action is not None:
                self._offer(action)
            self._call(self._on_mount, device)
        if change.initial:
            self._ready.set()

    def _admitted(self, device: Device) -> tuple[dict[str, Any] | None, DeviceChange | None]:
        if self._admit is None:
            return None, None
        try:
            return self._admit(device)
        except Exception:  # a failing device control must not stop USB reporting
            log.exception("device control failed for %s", device.mountpoint)
            return None, None

    def _offer(self, change: DeviceChange) -> None:
        if not self._emit(change):
            self._not_taken += 1

    def _identify(self, mount: Mount) -> Device | None:
        try:
            if not self._policy.is_removable(mount):
                return None
            return self._policy.identify(mount)
        except OSError as e:  # the volume can go between the table read and the sysfs look-up
            log.warning("cannot identify %s on %s: %s", mount.device, mount.mountpoint, e)
            return None

    def _call(self, callback: DeviceCallback, device: Device) -> None:
        try:
            callback(device)
        except Exception:  # a failing consumer must not stop USB reporting
            log.exception("%s callback failed for %s", getattr(callback, "__name__", callback), device.mountpoint)
