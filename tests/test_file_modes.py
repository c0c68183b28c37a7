"""Everything the agent writes is its own: files 0600 in directories 0700, whatever the umask."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.bundle import read_bundle
from agent.bundle_store import BundleStore
from agent.credentials import Credentials, save
from agent.spool import Spool
from server.keys import public_key_hex
from server.signing import build_bundle
from tests.agent_process import write_config
from tests.conftest import SECRET_WORD, run_cli
from tests.waiting import wait_for

PACK = 'rule quiet_word { meta: severity = "high" strings: $a = "HUMMINGBIRD-0042" condition: $a }'


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_spool_its_wal_and_shm_are_private(tmp_path: Path, umask: int) -> None:
    state = tmp_path / "var" / "state"
    with Spool(str(state / "spool.db"), max_bytes=1 << 20) as spool:
        spool.put({"id": "e-1", "type": "file.write"}, matched=True)
        spool.set_state("sources", {"files": {"state": "ok"}})  # the health the daemon records
        assert {p.name for p in state.iterdir()} == {"spool.db", "spool.db-wal", "spool.db-shm"}
        for name in ("spool.db", "spool.db-wal", "spool.db-shm"):
            assert mode(state / name) == 0o600, name
    assert mode(state) == mode(state.parent) == 0o700


def test_a_spool_left_readable_by_an_older_agent_is_tightened(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "spool.db"
    Spool(str(path), max_bytes=1 << 20).close()
    os.chmod(path, 0o644)
    with Spool(str(path), max_bytes=1 << 20) as spool:
        spool.put({"id": "e-1", "type": "file.write"}, matched=False)
        assert mode(path) == mode(tmp_path / "spool.db-wal") == 0o600


def test_bundle_files_are_private(tmp_path: Path, umask: int) -> None:
    key = Ed25519PrivateKey.generate()
    data = build_bundle(version=4, vendor=None, packs={"quiet": PACK}, created_by="alice", created_at="2026-11-24T09:00:00.000Z", key=key).data
    bundle = read_bundle(data, public_key_hex=public_key_hex(key), vendor="acme-bpo")
    store = BundleStore(str(tmp_path / "state" / "bundle"))
    store.save(data, bundle, "etag-4")
    (pack,) = store.unpack(bundle).values()
    directory = tmp_path / "state" / "bundle"
    assert mode(tmp_path / "state") == mode(directory) == mode(Path(pack).parent) == 0o700
    assert mode(directory / "bundle.tar.gz") == mode(directory / "bundle.json") == mode(Path(pack)) == 0o600

    os.chmod(directory, 0o755)
    os.chmod(directory / "bundle.tar.gz", 0o644)
    assert store.load(public_key_hex=public_key_hex(key), vendor="acme-bpo") is not None
    assert mode(directory) == 0o700 and mode(directory / "bundle.tar.gz") == 0o600


def test_credentials_are_private(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "fresh" / "credentials.json"
    save(str(path), Credentials("https://c.example", "a-1", "secret", "acme-bpo", "00" * 32, 60, "2026-11-24T09:00:00Z"))
    assert mode(path) == 0o600 and mode(path.parent) == 0o700


def test_a_manual_run_under_umask_000_leaves_nothing_readable_by_others(tmp_path: Path, rules_dir: Path) -> None:
    config = write_config(tmp_path, rules_dir)
    config.write_text(config.read_text().replace('path = "spool.db"', 'path = "state/spool.db"'))
    (tmp_path / "state").mkdir(mode=0o700)  # as an installer makes it: what is at stake here is what the agent puts in it
    with open(tmp_path / "agent.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli.main", "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, umask=0
        )
    try:

        def status() -> dict[str, Any]:
            done = run_cli("status", "--config", str(config), "--json")
            return json.loads(done.stdout) if done.returncode == 0 else {}

        wait_for(lambda: status().get("running") or proc.poll() is not None, timeout=20, message="agent up")
        assert proc.poll() is None, (tmp_path / "agent.log").read_text()
        (tmp_path / "Desktop" / "leak.txt").write_text(SECRET_WORD)
        wait_for(lambda: status().get("spool_depth") == 1, timeout=15, message="event spooled")
        state = tmp_path / "state"
        assert {p.name: mode(p) for p in state.iterdir()} == {"spool.db": 0o600, "spool.db-wal": 0o600, "spool.db-shm": 0o600}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
