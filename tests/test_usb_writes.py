"""Writes to a real loop-mounted stick under a real `dlp-agent run`: excludes, files still open, pulls, slow appends."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent_process import Agent, write_config
from tests.conftest import SECRET_WORD
from tests.loopdev import LoopMounts, require_mount_rights, require_tools
from tests.waiting import wait_for

LEAK = b"token = '" + SECRET_WORD.encode() + b"'\n"


StickAgent = tuple[Agent, Path, LoopMounts]


@pytest.fixture(params=["fanotify", "inotify"])
def stick_agent(tmp_path: Path, rules_dir: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., StickAgent]]:
    """Starts an agent with USB on (plus ``usb_lines`` under ``[usb]``) and mounts an ext4 stick after it started,
    watched through each backend."""
    require_mount_rights()
    require_tools("mkfs.ext4")
    with contextlib.ExitStack() as stack:

        def start(*usb_lines: str) -> StickAgent:
            media = tmp_path / "media"
            media.mkdir()
            config = write_config(tmp_path, rules_dir, files=f'backend = "{request.param}"')
            usb = "\n".join(["[usb]", "enabled = true", f'removable_roots = ["{media}"]', *usb_lines])
            config.write_text(config.read_text().replace("[usb]\nenabled = false", usb))
            mounts = stack.enter_context(LoopMounts(tmp_path))
            stick = media / "STICK"
            image = mounts.image("stick.img", "ext4", label="STICK")
            agent = Agent(config)
            stack.callback(agent.stop, signal.SIGKILL)
            mounts.mount_loop(image, stick)
            wait_for(lambda: request.param in agent.status().get("sources", {}).get(f"usb:{stick}", {}).get("message", ""), timeout=15, message="stick watched")
            return agent, stick, mounts

        yield start


def usb_writes(agent: Agent, path: Path) -> list[dict]:
    return [e for e in agent.events() if e["type"] == "usb.write" and e["path"] == str(path)]


def test_home_folder_excludes_do_not_apply_on_a_stick(stick_agent) -> None:
    agent, stick, _ = stick_agent()
    # [files] exclude keeps its defaults (*.tmp, **/node_modules/**, ...): on the stick they mean nothing.
    (stick / "backup.tmp").write_bytes(LEAK)
    (stick / "node_modules").mkdir()
    (stick / "node_modules" / "index.js").write_bytes(LEAK)
    for path in (stick / "backup.tmp", stick / "node_modules" / "index.js"):
        (event,) = wait_for(lambda p=path: usb_writes(agent, p), timeout=15, message=f"usb.write for {path.name}")
        assert event["status"] == "match"


def test_usb_exclude_is_honoured(stick_agent) -> None:
    agent, stick, _ = stick_agent('exclude = ["**/scratch/**"]')
    (stick / "scratch").mkdir()
    (stick / "scratch" / "a.py").write_bytes(LEAK)
    (stick / "b.py").write_bytes(LEAK)
    wait_for(lambda: usb_writes(agent, stick / "b.py"), timeout=15, message="usb.write for b.py")
    assert not usb_writes(agent, stick / "scratch" / "a.py")


def test_a_file_still_open_is_scanned_before_the_stick_is_pulled(stick_agent) -> None:
    agent, stick, _ = stick_agent()
    target = stick / "dump.sql"
    target.write_bytes(b"-- harmless header\n")
    # usb.mount and the header's close: both through the pipeline before the code is appended.
    wait_for(lambda: "2 item(s) processed" in agent.status()["sources"]["pipeline"]["message"], message="header scanned")
    # An existing file opened again: no creation to time, only writes, and no close before the pull.
    with open(target, "ab") as handle:
        handle.write(LEAK)
        handle.flush()
        (event,) = wait_for(lambda: usb_writes(agent, target), timeout=10, message="usb.write while the file is open")
        assert (event["status"], event["trigger"]) == ("match", "writing")
        subprocess.run(["umount", "-l", str(stick)], check=True)
    wait_for(lambda: any(e["type"] == "usb.unmount" for e in agent.events()), timeout=15, message="usb.unmount")


def test_a_write_the_stick_took_away_before_its_scan_is_an_event(stick_agent) -> None:
    agent, stick, _ = stick_agent()
    target = stick / "quick.sql"
    with open(target, "wb") as handle:
        handle.write(LEAK)
        handle.flush()
        subprocess.run(["umount", "-l", str(stick)], check=True)  # within the quiet time: never scanned
    wait_for(lambda: any(e["type"] == "usb.unmount" for e in agent.events()), timeout=15, message="usb.unmount")
    (event,) = wait_for(lambda: usb_writes(agent, target), timeout=15, message="usb.write for the lost write")
    assert (event["status"], event["trigger"], event["reason"]) == ("unreadable", "removed", "volume removed while writing")
    assert event["device"]["mountpoint"] == str(stick)


def test_a_slow_append_is_seen_before_the_file_is_closed(stick_agent) -> None:
    agent, stick, _ = stick_agent()
    target = stick / "notes.txt"
    # Harmless lines, then the code, a line every 0.1 s (never quiet), the file open for 12 s: the
    # default [usb] writing_interval_ms (5 s) has it scanned while still open.
    writer = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time\n"
            "with open(sys.argv[1], 'wb', buffering=0) as f:\n"
            "    for i in range(120):\n"
            "        f.write(sys.argv[2].encode() + b'\\n' if i == 20 else b'just a line %d\\n' % i)\n"
            "        time.sleep(0.1)\n",
            str(target), LEAK.decode().strip(),
        ]
    )  # fmt: skip
    try:
        wait_for(lambda: [e for e in usb_writes(agent, target) if e["status"] == "match"], timeout=11, message="the match")
        assert writer.poll() is None, "seen only once the writer closed the file"
    finally:
        writer.kill()
        writer.wait()
