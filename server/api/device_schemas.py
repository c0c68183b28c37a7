"""Bodies of the device control and quarantine API (server/api/device_routes.py).

Inputs are bounded here; the patterns' own rules (hex ids, wildcards, printable serials) are
checked once in server/store/devices.py, which the CLI and the UI call too.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from server.api.schemas import Text, _In, _Out
from server.store.devices import MAX_ALLOWED, MAX_NOTE, MAX_REASON, MAX_SERIAL

IdPattern = Annotated[str, StringConstraints(max_length=8)]
SerialPattern = Annotated[Text, StringConstraints(max_length=MAX_SERIAL)]


class DeviceIn(_In):
    vendor_id: IdPattern = "*"
    product_id: IdPattern = "*"
    serial: SerialPattern = "*"


class AllowedDeviceIn(DeviceIn):
    note: Annotated[Text, StringConstraints(max_length=MAX_NOTE)] = ""


class DevicePolicyIn(_In):
    action: Literal["audit", "read-only", "block"]
    allowed: list[AllowedDeviceIn] = Field(default_factory=list, max_length=MAX_ALLOWED)


class DeviceExceptionIn(DeviceIn):
    duration: Annotated[str, StringConstraints(pattern=r"^\d{1,6}[smhdw]$")] = Field(description="how long it lasts, like 30m, 4h, 2d (at most 90d)")
    reason: Annotated[Text, StringConstraints(min_length=1, max_length=MAX_REASON)]


class AllowedDevicePublic(_Out):
    vendor_id: str
    product_id: str
    serial: str
    note: str


class DeviceExceptionPublic(_Out):
    id: int
    vendor_id: str
    product_id: str
    serial: str
    expires_at: str
    reason: str
    granted_by: str


class DevicePolicyPublic(_Out):
    vendor: str
    version: int
    action: str
    allowed: list[AllowedDevicePublic]
    exceptions: list[DeviceExceptionPublic] = Field(description="exceptions in force now (expired and revoked ones are left out)")
    updated_at: str
    updated_by: str


class DeviceExceptionRevoked(DeviceExceptionPublic):
    revoked_at: str
    version: int


class SignedDevicePolicy(_Out):
    document: str = Field(description="the policy JSON as a string (docs/device-control.md)")
    signature: str = Field(description="hex Ed25519 signature of the document's UTF-8 bytes by the collector's signing key")


class QuarantineItemPublic(_Out):
    quarantine_id: str
    agent_id: str
    hostname: str
    vendor: str
    event_id: str
    original_path: str
    size: int
    sha256: str
    state: Literal["held", "release_requested", "released", "delete_requested", "deleted", "failed"]
    detail: str | None = Field(description="where a released file went, or why the agent could not do what was asked")
    created_at: str
    updated_at: str


class QuarantineList(_Out):
    items: list[QuarantineItemPublic]


class QuarantineRequested(_Out):
    command: int
    op: Literal["release", "delete"]
    quarantine_id: str
    agent_id: str
    state: str
