"""The agent's identity at its collector: written once by ``dlp-agent enroll``, read by the shipper.

The file holds a secret (the agent credential), so it is written with mode 0600 through a
temporary file and a rename: a crash mid-write leaves the old identity, never half of one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from agent.atomic import write_atomically


class CredentialsError(Exception):
    """The credentials file is missing, unreadable or not ours."""


@dataclass(frozen=True)
class Credentials:
    server_url: str
    agent_id: str
    credential: str
    vendor: str
    signing_public_key: str
    """Hex Ed25519 key that signs rule bundles published by this collector."""
    heartbeat_interval_s: int
    enrolled_at: str
    ca_file: str = ""

    def __repr__(self) -> str:  # never print the secret by accident
        return f"Credentials(agent_id={self.agent_id!r}, vendor={self.vendor!r}, server_url={self.server_url!r})"


def save(path: str, credentials: Credentials) -> None:
    write_atomically(path, json.dumps(asdict(credentials), indent=2).encode(), mode=0o600)


def load(path: str) -> Credentials:
    try:
        with open(path, encoding="utf-8") as handle:
            data: Any = json.load(handle)
    except FileNotFoundError:
        raise CredentialsError(f"{path}: not enrolled; run dlp-agent enroll --server URL --token TOKEN") from None
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"{path}: unreadable credentials ({exc})") from None
    fields = set(Credentials.__dataclass_fields__)
    if not isinstance(data, dict) or not {"server_url", "agent_id", "credential"} <= set(data):
        raise CredentialsError(f"{path}: not an agent credentials file")
    return Credentials(**{k: v for k, v in data.items() if k in fields})
