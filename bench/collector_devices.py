"""What device control adds to the collector's hot calls: a heartbeat's extra read, a release key, a policy document.

Usage: python bench/collector_devices.py [--backend sqlite|postgresql] [--agents 10000] [--items 10000] [--rounds 2000]

Every heartbeat now also reads the vendor's device policy version and the agent's pending
quarantine commands (one statement) in its one write transaction; a reply with a release
derives the file's key (X25519 + HKDF, the private key read from the data directory). This
enrols ``--agents`` agents and records ``--items`` quarantined files (a tenth of them with a
pending command) straight through the store functions, then times each piece in its own write
transaction, as the heartbeat route runs it, beside the UPDATE every heartbeat already did.
Figures are per call, in microseconds, on this machine's shared cores: compare the rows, not
the absolute values.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from serving import ScratchPostgres, percentile  # noqa: E402

from server.db.engine import Database  # noqa: E402
from server.db.migrate import upgrade  # noqa: E402
from server.keys import create_signing_key, load_signing_key, public_key_hex, quarantine_key  # noqa: E402
from server.store import agents, devices, enrollment, quarantine  # noqa: E402
from server.store.sql import utcnow  # noqa: E402

CHUNK = 1_000
REPORT = {"agent_version": "0.1.0", "spool_depth": 0, "dropped": 0, "sources": {"files": {"state": "ok"}}}


def populate(db: Database, *, agent_count: int, item_count: int) -> list[agents.AgentIdentity]:
    """Agents of one vendor with a policy of 256 allowed patterns and 50 exceptions; quarantined
    files spread over the agents, every tenth with a pending release or delete."""
    now = utcnow()
    with db.write() as conn:
        token, _ = enrollment.create_token(conn, vendor="bench", uses=agent_count, lifetime=timedelta(days=1), created_by="bench", now=now)
    credentials: list[str] = []
    for start in range(0, agent_count, CHUNK):
        with db.write() as conn:
            for i in range(start, min(agent_count, start + CHUNK)):
                enrolled = enrollment.enroll(conn, token=token, hostname=f"ws-{i:05d}", os_name="linux", machine_id=f"m{i}", agent_version="0.1.0", address=None, now=now)
                credentials.append(enrolled.credential)
    with db.read() as conn:
        identities = [agents.authenticate(conn, value=c) for c in credentials]
    with db.write() as conn:
        allowed = [{"vendor_id": f"{i:04x}", "product_id": "*", "serial": "*", "note": "bench"} for i in range(devices.MAX_ALLOWED)]
        devices.set_policy(conn, vendor="bench", action="block", allowed=allowed, actor="bench", address=None, now=now)
        for i in range(50):
            devices.grant_exception(conn, vendor="bench", device={"vendor_id": "1234", "serial": f"SN{i}"}, duration="1d", reason="bench", actor="bench", address=None, now=now)
    for start in range(0, item_count, CHUNK):
        with db.write() as conn:
            for i in range(start, min(item_count, start + CHUNK)):
                agent = identities[i % len(identities)]
                facts = {"id": str(uuid.uuid4()), "ephemeral_key": X25519PrivateKey.generate().public_key().public_bytes_raw().hex(),
                         "original_path": f"/media/u/STICK/f{i}", "size": i, "sha256": "0" * 64}  # fmt: skip
                record = {"id": str(uuid.uuid4()), "type": "usb.write", "enforcement": {"action": "quarantine", "mode": "enforce", "done": True, "quarantine": facts}}
                quarantine.on_ingest(conn, agent=agent, records=[record], now=now)
                if i % 10 == 0:
                    quarantine.request(conn, quarantine_id=facts["id"], op="release" if i % 20 == 0 else "delete", actor="bench", address=None, now=now)
    return identities


def reply(conn: Any, agent: agents.AgentIdentity, key: Callable[[], Any], now: Any) -> tuple[int | None, list[dict[str, Any]]]:
    """The device control part of a heartbeat reply, as agent_routes.heartbeat asks for it."""
    return quarantine.heartbeat_reply(conn, agent_id=agent.id, vendor_id=agent.vendor_id, private_key=key, now=now)


def timed(db: Database, rounds: int, work: Callable[[Any, int], Any]) -> list[float]:
    """Microseconds per call of ``work(conn, round)``, each in its own write transaction."""
    spent = []
    for i in range(rounds):
        with db.write() as conn:
            started = time.perf_counter()
            work(conn, i)
            spent.append((time.perf_counter() - started) * 1e6)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlp-bench-devices-") as scratch, ScratchPostgres() as postgres:
        data_dir = Path(scratch)
        url = postgres.create("devices") if args.backend == "postgresql" else f"sqlite:///{data_dir / 'collector.db'}"
        db = Database(url)
        try:
            upgrade(db)
            create_signing_key(data_dir / "signing.key")
            signing = load_signing_key(data_dir / "signing.key")
            public = public_key_hex(quarantine_key(data_dir))
            started = time.perf_counter()
            identities = populate(db, agent_count=args.agents, item_count=args.items)
            setup_s = time.perf_counter() - started

            def key() -> Any:
                return quarantine_key(data_dir)

            now = utcnow()
            with db.read() as conn:
                pending = {a: reply(conn, a, key, now)[1] for a in identities[:20]}
            idle = [a for a in identities if not pending.get(a)][: args.rounds] or identities
            releasing = next(a for a, commands in pending.items() if any(c["op"] == "release" for c in commands))
            deleting = next(a for a, commands in pending.items() if commands and all(c["op"] == "delete" for c in commands))
            rows = [
                ("heartbeat UPDATE (already there)", lambda conn, i: agents.heartbeat(conn, agent_id=idle[i % len(idle)].id, report=REPORT, address=None, now=now)),
                ("+ policy version and commands: none pending", lambda conn, i: reply(conn, idle[i % len(idle)], key, now)),
                ("+ policy version and commands: a delete", lambda conn, i: reply(conn, deleting, key, now)),
                ("+ policy version and commands: a release (key derived)", lambda conn, i: reply(conn, releasing, key, now)),
                ("policy document, 256 allowed + 50 exceptions, signed", lambda conn, i: devices.signed_document(conn, vendor="bench", signing_key=signing, quarantine_public_key=public, now=now)),
            ]
            title = f"Device control per call, {args.backend}: {args.agents:,} agents, {args.items:,} quarantined files ({setup_s:.0f} s to set up), {args.rounds:,} rounds"
            table = Table(title=title)
            for column in ("call", "p50 µs", "p99 µs", "mean µs"):
                table.add_column(column, justify="left" if column == "call" else "right")
            for name, work in rows:
                spent = timed(db, args.rounds, work)
                table.add_row(name, f"{percentile(spent, 0.5):.0f}", f"{percentile(spent, 0.99):.0f}", f"{sum(spent) / len(spent):.0f}")
            Console(width=150).print(table)
        finally:
            db.dispose()


if __name__ == "__main__":
    main()
