"""Encoded, packed, locked and deeply nested copies reach a running `dlp-agent run` as events (issue 14, items 4-6).

The scanner's own tests cover each decoder and container; these drive the same inputs, made by
the real tools a leaker would use, through a real agent process watching a home folder.
"""

from __future__ import annotations

import io
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.agent_process import Agent, write_config
from tests.conftest import SECRET_WORD
from tests.waiting import wait_for

CODE = f"def settle(ledger):\n    token = '{SECRET_WORD}'\n    return ledger.close(token)\n".encode()


@pytest.fixture
def agent(tmp_path: Path, rules_dir: Path):
    running = Agent(write_config(tmp_path, rules_dir))
    yield running
    running.stop(signal.SIGKILL)


def _made_by(command: list[str], data: bytes) -> bytes:
    return subprocess.run(command, input=data, capture_output=True, check=True, timeout=30).stdout


def _nested_zip(data: bytes, depth: int) -> bytes:
    for level in range(depth):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("settle.py" if level == 0 else f"inner{level}.zip", data)
        data = buffer.getvalue()
    return data


def _event_for(agent: Agent, path: Path) -> dict:
    def found() -> dict | None:
        return next((e for e in agent.events() if e.get("path") == str(path)), None)

    return wait_for(found, timeout=20, message=f"an event for {path.name}")


def test_encoded_copies_become_events(agent: Agent, tmp_path: Path) -> None:
    desktop = tmp_path / "Desktop"
    copies = {
        "settle.b64": _made_by(["base64"], CODE),
        "settle.hex": _made_by(["xxd", "-p"], CODE),
        "settle.utf16": _made_by(["iconv", "-f", "UTF-8", "-t", "UTF-16"], CODE),
        "settle.uu": _made_by(["uuencode", "settle.py"], CODE),
    }
    for name, data in copies.items():
        assert SECRET_WORD.encode() not in data
        (desktop / name).write_bytes(data)
    for name in copies:
        event = _event_for(agent, desktop / name)
        assert (event["type"], event["status"], event["severity"]) == ("file.write", "match", "high"), name
        assert event["matches"][0]["rule"] == "secret_word" and event["matches"][0]["member"], name


def test_locked_and_too_deep_containers_become_events_in_the_home_folder(agent: Agent, tmp_path: Path) -> None:
    desktop = tmp_path / "Desktop"
    source = tmp_path / "settle.py"
    source.write_bytes(CODE)
    locked = desktop / "backup.7z"
    subprocess.run(["7zz", "a", "-pcorrect-horse", "-mhe=on", str(locked), str(source)], capture_output=True, check=True, timeout=60)
    deep = desktop / "deep.zip"
    deep.write_bytes(_nested_zip(CODE, 6))
    for path in (locked, deep):
        event = _event_for(agent, path)
        assert event["type"] == "file.write" and event["severity"] == "medium", (path.name, event)
        assert event["status"] in ("encrypted", "skipped") and not event["matches"], (path.name, event)
