"""Idle memory (issue 22): what an idle daemon leaves unloaded until first use, what it never loads
(pydantic: the collector's, not the agent's), and compacted rules."""

from __future__ import annotations

import io
import json
import signal
import zipfile
from pathlib import Path

import pytest
import yara

from agent.scanning import rulecache
from agent.scanning.rules import compile_rule_files, rule_files
from agent.spool import Spool
from tests.agent_process import Agent, write_config
from tests.conftest import SECRET_WORD
from tests.stack import Stack, cli, stack  # noqa: F401  (the collector-and-agent fixture)
from tests.waiting import wait_for

# Shared objects an agent that is not enrolled and has quarantined nothing never needs: cryptography's
# Rust library (quarantine; an enrolled agent's signature checks do without it) and Python's TLS module (requests).
DEFERRED = ("cryptography/hazmat/bindings/_rust", "/_ssl.cpython")
# pydantic's compiled core, about 9 MB of an idle agent until the configuration was read without it:
# a daemon maps it neither idle nor once it has talked to its collector and verified a bundle.
NEVER = "pydantic_core/_pydantic_core"


def mapped(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1] for line in f if len(line.split()) >= 6}


@pytest.fixture
def agent(tmp_path: Path, rules_dir: Path):
    running = Agent(write_config(tmp_path, rules_dir))
    yield running
    running.stop(signal.SIGKILL)


def test_idle_daemon_loads_no_network_or_crypto_and_its_first_scans_work(agent: Agent, tmp_path: Path) -> None:
    wait_for(lambda: agent.status().get("running") is True, timeout=30, message="daemon running")
    assert not [path for path in mapped(agent.proc.pid) if any(part in path for part in (*DEFERRED, NEVER))]
    desktop = tmp_path / "Desktop"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner/notes.txt", f"key = '{SECRET_WORD}'\n")
    (desktop / "bundle.zip").write_bytes(archive.getvalue())
    (desktop / "plain.py").write_text(f"token = '{SECRET_WORD}'\n")
    wait_for(lambda: agent.status().get("spool_depth") == 2, timeout=30, message="both files spooled")
    by_path = {event["path"]: event for event in agent.events()}
    assert {Path(p).name for p in by_path} == {"bundle.zip", "plain.py"}
    assert all(event["status"] == "match" and event["matches"][0]["rule"] == "secret_word" for event in by_path.values())
    zipped = by_path[str(desktop / "bundle.zip")]["matches"][0]
    assert "inner/notes.txt" in str(zipped), zipped


def test_an_enrolled_daemon_that_verified_a_bundle_has_no_pydantic(stack: Stack, tmp_path: Path) -> None:  # noqa: F811
    """The first heartbeat (requests, TLS) and the bundle's signature check load what they need, and
    none of it brings pydantic or cryptography in (nor does anything the agent shares with the collector)."""
    published = cli("server.cli", "signatures", "publish", str(stack.rules_dir), "--data-dir", str(stack.data_dir), "--json")
    assert published.returncode == 0, published.stderr
    version = json.loads(published.stdout)["version"]
    serve = stack.collector()
    config = stack.agent_config()
    stack.enroll(config, serve.url)
    agent = stack.agent(config)

    def heard() -> bool:
        listed = cli("server.cli", "agent", "list", "--data-dir", str(stack.data_dir), "--json")
        return bool(listed.returncode == 0 and [a for a in json.loads(listed.stdout)["items"] if a.get("last_heartbeat_at")])

    def running_version() -> object:
        with Spool.open_readonly(str(agent.spool)) as reader:
            return reader.get_state("bundle_version")

    wait_for(lambda: running_version() == version, timeout=60, interval=0.5, message="the bundle verified and running")
    wait_for(heard, timeout=60, interval=0.5, message="a heartbeat at the collector")
    loaded = mapped(agent.proc.pid)
    assert [path for path in loaded if DEFERRED[1] in path], "no TLS module: the agent never talked to its collector"
    # The bundle's Ed25519 check goes through hashlib's OpenSSL (agent/ed25519.py), not cryptography.
    assert not [path for path in loaded if DEFERRED[0] in path or NEVER in path]


def test_compacted_rules_match_as_compiled(rules_dir: Path) -> None:
    files = rule_files(str(rules_dir))
    compiled = yara.compile(filepaths=files)
    compacted = rulecache.compact(compiled)
    data = f"header\nkey = '{SECRET_WORD}'\nSTRICTLY CONFIDENTIAL\n".encode()
    assert [m.rule for m in compacted.match(data=data)] == [m.rule for m in compiled.match(data=data)]
    assert sorted(r.identifier for r in compacted) == sorted(r.identifier for r in compiled)
    ruleset = compile_rule_files(files, source=str(rules_dir))
    assert [m.rule for m in ruleset.rules.match(data=data)] == [m.rule for m in compiled.match(data=data)] != []
