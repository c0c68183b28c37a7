"""`dlp-agent run` as a real process: files become spooled events; status; signals; SIGKILL."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from agent.daemon import REPORTS_KEY
from agent.spool import Spool
from tests.agent_process import Agent, write_config
from tests.conftest import SECRET_WORD, run_cli
from tests.loopdev import LoopMounts, require_mount_rights, require_tools
from tests.waiting import wait_for


@pytest.fixture
def agent(tmp_path: Path, rules_dir: Path):
    running = Agent(write_config(tmp_path, rules_dir))
    yield running
    running.stop(signal.SIGKILL)


def test_file_written_becomes_a_spooled_event(agent: Agent, tmp_path: Path) -> None:
    leak = tmp_path / "Desktop" / "leak.py"
    leak.write_bytes(b"key = '" + SECRET_WORD.encode() + b"'\n")
    (tmp_path / "Desktop" / "harmless.txt").write_text("hello")
    wait_for(lambda: agent.status().get("spool_depth") == 1, timeout=15, message="event spooled")
    (event,) = agent.events()
    assert (event["type"], event["channel"], event["path"], event["status"]) == ("file.write", "file", str(leak), "match")
    assert event["matches"][0]["rule"] == "secret_word" and event["severity"] == "high"
    assert event["sha256"] and event["ruleset_version"] == agent.status()["ruleset_version"]


def test_status_reports_sources(agent: Agent) -> None:
    status = agent.status()
    assert status["running"] and status["dropped"] == 0 and status["last_shipped_at"] is None
    wait_for(lambda: "files" in agent.status().get("sources", {}), timeout=10)
    assert agent.status()["sources"]["files"]["state"] == "ok"


def test_sigterm_stops_cleanly(agent: Agent) -> None:
    assert agent.stop(signal.SIGTERM) == 0
    assert agent.status()["running"] is False


def test_sigkill_loses_nothing_already_spooled(agent: Agent, tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / "Desktop" / f"leak{i}.py").write_bytes(SECRET_WORD.encode() * (i + 1))
    wait_for(lambda: agent.status().get("spool_depth") == 30, timeout=30, message="30 events")
    agent.stop(signal.SIGKILL)
    assert len({e["id"] for e in agent.events()}) == 30


def test_rule_error_exits_2(tmp_path: Path) -> None:
    rules = tmp_path / "badrules"
    rules.mkdir()
    (rules / "x.yar").write_text("rule x { condition: nope }")
    proc = run_cli("run", "--config", str(write_config(tmp_path, rules)), timeout=30)
    assert proc.returncode == 2 and b"x.yar:1" in proc.stderr


def usb_config(tmp_path: Path, rules_dir: Path) -> tuple[Path, Path]:
    """A config with USB on and a temporary removable root; skips where sticks cannot be mounted."""
    require_mount_rights()
    require_tools("mkfs.ext4")
    media = tmp_path / "media"
    media.mkdir()
    config = write_config(tmp_path, rules_dir)
    config.write_text(config.read_text().replace("[usb]\nenabled = false", f'[usb]\nenabled = true\nremovable_roots = ["{media}"]'))
    return config, media


def test_usb_stick_mount_and_write(tmp_path: Path, rules_dir: Path) -> None:
    config, media = usb_config(tmp_path, rules_dir)
    with LoopMounts(tmp_path) as mounts:
        stick = media / "STICK"
        stick.mkdir()
        image = mounts.image("stick.img", "ext4", label="STICK")
        # Already on the stick before it is plugged in: not exfiltration.
        mounts.mount_loop(image, stick)
        (stick / "old.py").write_bytes(SECRET_WORD.encode())
        mounts.umount(stick)
        agent = Agent(config)
        try:
            mounts.mount_loop(image, stick)
            wait_for(lambda: any(e["type"] == "usb.mount" for e in agent.events()), timeout=15, message="usb.mount")
            wait_for(lambda: f"usb:{stick}" in agent.status().get("sources", {}), timeout=15, message="stick watched")
            (stick / "exfil.py").write_bytes(b"x = '" + SECRET_WORD.encode() + b"'\n")
            wait_for(lambda: any(e["type"] == "usb.write" for e in agent.events()), timeout=15, message="usb.write")
            mounts.umount(stick)
            wait_for(lambda: any(e["type"] == "usb.unmount" for e in agent.events()), timeout=15, message="usb.unmount")
            events = agent.events()
            (write,) = [e for e in events if e["type"] == "usb.write"]
            assert write["path"] == str(stick / "exfil.py") and write["channel"] == "usb"
            assert write["device"]["mountpoint"] == str(stick) and write["device"]["fstype"] == "ext4"
            assert write["device"]["label"] == "STICK"
            assert not any(e.get("path") == str(stick / "old.py") for e in events)
        finally:
            agent.stop(signal.SIGKILL)


def test_clipboard_copy_becomes_an_event_without_its_text(tmp_path: Path, rules_dir: Path, xvfb_display: str) -> None:
    from tests.test_clipboard import copy

    config = write_config(tmp_path, rules_dir)
    config.write_text(config.read_text().replace("[clipboard]\nenabled = false", "[clipboard]\nenabled = true\ninterval_ms = 100"))
    agent = Agent(config)  # DISPLAY is inherited from the fixture
    try:
        wait_for(lambda: agent.status().get("sources", {}).get("clipboard", {}).get("state") == "ok", timeout=15)
        copy("harmless words")
        text = f"token = {SECRET_WORD} # copied from the customer's repo"
        copy(text)
        wait_for(lambda: any(e["type"] == "clipboard.copy" for e in agent.events()), timeout=15, message="clipboard event")
        (event,) = agent.events()
        assert event["channel"] == "clipboard" and event["matches"][0]["rule"] == "secret_word"
        assert event["size"] == len(text.encode()) and event["path"] is None
        spool_bytes = (tmp_path / "spool.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("spool.db-*"))
        assert b"copied from the customer" not in spool_bytes
    finally:
        agent.stop(signal.SIGKILL)


def test_disk_full_under_the_spool(tmp_path: Path, rules_dir: Path) -> None:
    require_mount_rights()
    disk = tmp_path / "small"
    disk.mkdir()
    # Room for the spool's write-ahead log to grow to its checkpoint size (about 4 MiB).
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "dlp-test", str(disk)], check=True)
    try:
        spool = disk / "spool.db"
        config = write_config(tmp_path, rules_dir)
        config.write_text(config.read_text().replace('path = "spool.db"', f'path = "{spool}"'))
        agent = Agent(config, spool)
        try:
            filler = disk / "filler"
            with open(filler, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass
            for i in range(60):
                (tmp_path / "Desktop" / f"leak{i}.py").write_bytes(SECRET_WORD.encode() + b"-" * 1000 + str(i).encode())
            wait_for(lambda: "disk full" in agent.read_log(), timeout=30, message="disk full reported")
            assert agent.proc.poll() is None
            status = agent.status()
            assert status["running"] and status["spool_disk_free"] < 64 * 1024
            filler.unlink()
            wait_for(lambda: agent.status().get("spool_depth") == 60, timeout=60, message="all 60 spooled")
            assert "spool writable again" in agent.read_log()
        finally:
            agent.stop(signal.SIGKILL)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_stick_pulled_in_the_middle_of_a_copy(tmp_path: Path, rules_dir: Path) -> None:
    config, media = usb_config(tmp_path, rules_dir)
    with LoopMounts(tmp_path) as mounts:
        stick = media / "STICK"
        stick.mkdir()
        image = mounts.image("stick.img", "ext4", label="STICK")
        agent = Agent(config)
        try:
            mounts.mount_loop(image, stick)
            wait_for(lambda: f"usb:{stick}" in agent.status().get("sources", {}), timeout=15, message="stick watched")
            # A copy in progress: the file is open and growing when the stick goes away.
            handle = open(stick / "dump.sql", "wb")
            handle.write(SECRET_WORD.encode() + b"\n" + b"-- rows\n" * 50_000)
            handle.flush()
            subprocess.run(["umount", "-l", str(stick)], check=True)
            handle.close()  # the lazy unmount lets the writer finish against the detached volume
            wait_for(lambda: any(e["type"] == "usb.unmount" for e in agent.events()), timeout=15, message="usb.unmount")
            (stick / "after.txt").write_text("on the internal disk now")  # the mount point itself is not the stick
            wait_for(lambda: f"usb:{stick}" not in agent.status().get("sources", {}), timeout=15, message="watch dropped")
            status = agent.status()
            assert status["running"] and agent.proc.poll() is None
            assert status["sources"]["pipeline"]["state"] == "ok"
            assert not any(e.get("path") == str(stick / "after.txt") and e["channel"] == "usb" for e in agent.events())
        finally:
            agent.stop(signal.SIGKILL)


def test_copy_of_a_protected_file_is_reported_and_work_inside_the_repo_is_not(tmp_path: Path, rules_dir: Path) -> None:
    repo = tmp_path / "Desktop" / "customer-repo"
    repo.mkdir(parents=True)
    original = repo / "ledger.go"
    original.write_bytes(b"package ledger\n\nfunc Settle() error {\n" + b"\t// reconcile\n" * 20 + b"}\n")
    config = write_config(tmp_path, rules_dir)
    config.write_text(config.read_text() + f'[protected]\nfolders = ["{repo}"]\n')
    agent = Agent(config)
    try:
        wait_for(lambda: "1 distinct file" in agent.status().get("sources", {}).get("protected", {}).get("message", ""), timeout=15)
        (repo / "notes.txt").write_bytes(SECRET_WORD.encode())  # inside the repo: the engineer's own work
        copy = tmp_path / "Desktop" / "innocent.txt"
        copy.write_bytes(original.read_bytes())
        wait_for(lambda: agent.status().get("spool_depth") == 1, timeout=15, message="one event")
        (event,) = agent.events()
        assert event["path"] == str(copy)
        assert [(m["rule"], m["protected_path"]) for m in event["matches"]] == [("protected_file_copy", str(original))]
    finally:
        agent.stop(signal.SIGKILL)


def test_a_quarantine_report_queued_at_the_last_stop_is_spooled_at_the_next_start(tmp_path: Path, rules_dir: Path) -> None:
    # The command it reports is already carried out and recorded as done: losing the report would leave the
    # collector's item waiting for ever.
    config = write_config(tmp_path, rules_dir)
    report = {
        "type": "quarantine.released", "path": "/media/stick/a.py", "size": 3, "sha256": "ab" * 32, "observed_at": 1_800_000_000.0,
        "enforcement": {"action": "release", "mode": "enforce", "done": True, "detail": None, "command": 7, "quarantine": {"id": "q1"}},
    }  # fmt: skip
    with Spool(str(tmp_path / "spool.db"), max_bytes=1 << 24) as spool:
        spool.set_state(REPORTS_KEY, [report])
    running = Agent(config)
    try:
        wait_for(lambda: any(e["type"] == "quarantine.released" for e in running.events()), timeout=15, message="report spooled")
        (event,) = [e for e in running.events() if e["type"] == "quarantine.released"]
        assert event["enforcement"]["command"] == 7 and event["path"] == "/media/stick/a.py"
        assert running.stop(signal.SIGTERM) == 0
        with Spool.open_readonly(str(tmp_path / "spool.db")) as reader:
            assert reader.get_state(REPORTS_KEY, None) == []
    finally:
        running.stop(signal.SIGKILL)
