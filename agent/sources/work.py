"""What sources emit: frozen work items and device facts, plain data only."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Device:
    """A removable volume as far as this machine can tell; unknown fields are None."""

    mountpoint: str
    device: str | None = None
    fstype: str | None = None
    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    label: str | None = None
    size_bytes: int | None = None
    bus: str | None = None
    vendor_id: str | None = None
    """USB idVendor, four lower-case hex digits (what device policies match on, with ``product_id`` and ``serial``)."""
    product_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FileWork:
    """A file to scan: written, closed, moved or copied into a watched place."""

    path: str
    channel: str = "file"  # "file", or "usb" when the file sits on a removable volume
    reason: str = "closed"  # closed | created | moved | folder | writing | rescan | removed
    device: Device | None = None
    observed_at: float = dataclasses.field(default_factory=time.time)
    process: dict[str, Any] | None = None
    """The writer (agent/procinfo.py ``writer``) where the platform tells it (fanotify), else None."""


@dataclasses.dataclass(frozen=True)
class ClipboardWork:
    """Clipboard text that changed. ``data`` is at most the configured cap.

    ``trigger``: ``copy`` (the CLIPBOARD selection), ``select`` (the PRIMARY selection), or
    ``recent_copies`` (the concatenation of recent texts, made by the pipeline). ``earlier``: the
    recent texts before this one, joined; the pipeline scans them with this one after them.
    """

    data: bytes
    sha256: str
    original_size: int
    observed_at: float = dataclasses.field(default_factory=time.time)
    trigger: str = "copy"
    earlier: bytes = b""
    process: dict[str, Any] | None = None
    """The selection's owner (X11: its window's ``_NET_WM_PID``) where the display server tells it."""

    @property
    def truncated(self) -> bool:
        return self.original_size > len(self.data)


@dataclasses.dataclass(frozen=True)
class DeviceChange:
    """A removable volume appeared (``usb.mount``) or went away (``usb.unmount``)."""

    type: str
    device: Device
    observed_at: float = dataclasses.field(default_factory=time.time)
    enforcement: dict[str, Any] | None = None
    """What device control did about the volume (``usb.blocked``, ``usb.readonly``); None when nothing."""


@dataclasses.dataclass(frozen=True)
class SourceProblem:
    """Something a source could not see as it happened, and what it did about it (``source.events_lost``)."""

    type: str
    path: str  # the watched folder or volume it concerns
    message: str
    device: Device | None = None
    observed_at: float = dataclasses.field(default_factory=time.time)


@dataclasses.dataclass(frozen=True)
class QuarantineReport:
    """A collector's command on a quarantined file carried out or failed (``quarantine.released`` /
    ``quarantine.deleted``): ``path`` is where the file went (release) or was (delete)."""

    type: str
    path: str | None
    enforcement: dict[str, Any]
    size: int | None = None
    sha256: str | None = None
    observed_at: float = dataclasses.field(default_factory=time.time)


@dataclasses.dataclass(frozen=True)
class EgressWork:
    """Something on its way off the machine through a program the process source saw start
    (agent/egress): a push, a new remote, a copy of a protected repository, an upload.

    ``type`` is one of agent/events.py EGRESS_TYPES. ``repository`` is the repository's top folder
    (pushes, remotes, copies): the pipeline scans what it holds at HEAD unless ``repository_facts``
    already says it is protected. ``files`` are the local paths an upload tool's arguments named
    (folders walked by the pipeline, bounded): each is scanned. ``destination`` is
    agent/egress/remotes.py ``Destination.to_dict()``; ``refs`` what a push named.
    """

    type: str
    destination: dict[str, Any] | None
    process: dict[str, Any] | None
    repository: str | None = None
    repository_facts: dict[str, Any] | None = None
    """What is known of the repository without scanning (agent/egress/repository.py ``facts``)."""
    refs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    observed_at: float = dataclasses.field(default_factory=time.time)


Work = FileWork | ClipboardWork | DeviceChange | SourceProblem | QuarantineReport | EgressWork
Emit = Callable[[Work], bool]
"""Hands work on (the pipeline's ``submit``); False when it was not taken (the queue stayed full),
which the source counts in its health: nothing a source saw is lost without being counted."""
