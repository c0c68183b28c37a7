"""Idle memory (issue 22): what an idle daemon leaves unloaded until first use, and compacted rules."""

from __future__ import annotations

import io
import signal
import zipfile
from pathlib import Path

import pytest
import yara

from agent.scanning import rulecache
from agent.scanning.rules import compile_rule_files, rule_files
from tests.agent_process import Agent, write_config
from tests.conftest import SECRET_WORD
from tests.waiting import wait_for

# Shared objects an agent that is not enrolled and has quarantined nothing never needs: cryptography's
# Rust library (bundle and device-policy signatures, quarantine) and Python's TLS module (requests).
DEFERRED = ("cryptography/hazmat/bindings/_rust", "/_ssl.cpython")


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
    assert not [path for path in mapped(agent.proc.pid) if any(part in path for part in DEFERRED)]
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


def test_compacted_rules_match_as_compiled(rules_dir: Path) -> None:
    files = rule_files(str(rules_dir))
    compiled = yara.compile(filepaths=files)
    compacted = rulecache.compact(compiled)
    data = f"header\nkey = '{SECRET_WORD}'\nSTRICTLY CONFIDENTIAL\n".encode()
    assert [m.rule for m in compacted.match(data=data)] == [m.rule for m in compiled.match(data=data)]
    assert sorted(r.identifier for r in compacted) == sorted(r.identifier for r in compiled)
    ruleset = compile_rule_files(files, source=str(rules_dir))
    assert [m.rule for m in ruleset.rules.match(data=data)] == [m.rule for m in compiled.match(data=data)] != []
