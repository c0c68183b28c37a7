"""A real `dlp-agent run` child process and the configuration tests give it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from agent.spool import Spool
from tests.waiting import wait_for


def write_config(tmp_path: Path, rules_dir: Path, **extra: str) -> Path:
    """Watch ``tmp_path/Desktop`` with ``rules_dir``; ``extra`` adds lines to a section (``files=``, ``server=``, ``spool=``,
    ``egress=``: egress is off unless given)."""
    watch = tmp_path / "Desktop"
    watch.mkdir(exist_ok=True)
    config = tmp_path / "agent.toml"
    lines = [
        "[files]",
        f'watch = ["{watch}"]',
        "quiet_ms = 200",
        extra.get("files", ""),
        "[usb]",
        "enabled = false",
        "[clipboard]",
        "enabled = false",
        "[rules]",
        f'dir = "{rules_dir}"',
        "[spool]",
        'path = "spool.db"',
        extra.get("spool", ""),
        "[server]",
        extra.get("server", ""),
        "[scan]",
        "nice = 0",
        # Off unless asked for: the agent would see every program on the machine, other tests' too.
        "[egress]",
        extra.get("egress", "enabled = false"),
    ]
    config.write_text("\n".join(lines) + "\n")
    return config


class Agent:
    """A running `dlp-agent run` child process."""

    def __init__(self, config: Path, spool: Path | None = None, prefix: tuple[str, ...] = ()):
        """``prefix``: a command the agent runs under (``unshare -m ...``: its own mount namespace, as the service has)."""
        self.config = config
        self.spool = spool or config.parent / "spool.db"
        self.log = open(config.parent / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "agent.cli.main", "-v", "run", "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: self.status().get("running") or self.proc.poll() is not None, timeout=20, message="agent up")
            assert self.proc.poll() is None, self.read_log()
        except BaseException:
            self.stop(signal.SIGKILL)  # the caller never gets this object to stop
            raise

    def status(self) -> dict:
        from tests.conftest import run_cli  # late: conftest imports this module's users

        proc = run_cli("status", "--config", str(self.config), "--json")
        return json.loads(proc.stdout) if proc.returncode == 0 else {}

    def events(self) -> list[dict]:
        with Spool.open_readonly(str(self.spool)) as reader:
            return reader.peek(10_000)

    def read_log(self) -> str:
        self.log.flush()
        return (self.config.parent / "agent.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop with ``sig``; harmless twice. One that ignores it fails the test but is killed, not left running."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
