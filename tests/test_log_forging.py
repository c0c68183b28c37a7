"""Log forging (issue 14, item 12): a name the agent observes cannot add a line to its log or drive a terminal."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.display import TerminalFormatter
from agent.winservice import LOG_FILE
from tests.agent_process import Agent, write_config
from tests.waiting import wait_for

FORGED = "dlp-agent: ERROR: FORGED shipping resumed"
HOSTILE = f"Desk\n{FORGED}\x1b[2J\x1b]0;owned\x07"


def assert_not_forged(log: str) -> None:
    assert "FORGED" in log, "the hostile name never reached the log: the test proves nothing"
    assert "\x1b" not in log and "\x07" not in log
    forged = [line for line in log.splitlines() if line.startswith(FORGED)]
    assert not forged, f"forged line(s): {forged}"


def config_watching_a_hostile_folder(tmp_path: Path, rules_dir: Path) -> tuple[Path, Path]:
    """A config whose watched folder has a newline and escapes in its name; the folder, to remove later."""
    hostile = tmp_path / HOSTILE
    hostile.mkdir()
    config = write_config(tmp_path, rules_dir)
    text = config.read_text().replace('watch = ["', f'watch = ["{_toml(str(hostile))}", "', 1)
    config.write_text(text)
    return config, hostile


def _toml(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\x1b", "\\u001b").replace("\x07", "\\u0007")


def test_dlp_agent_run_logs_a_hostile_folder_name_on_one_line(tmp_path: Path, rules_dir: Path) -> None:
    config, hostile = config_watching_a_hostile_folder(tmp_path, rules_dir)
    agent = Agent(config)  # `dlp-agent -v run`: stderr, INFO and up
    try:
        shutil.rmtree(hostile)  # "... went away; watching it again when it comes back"
        wait_for(lambda: "went away" in agent.read_log(), timeout=20, message="the folder's removal logged")
        log = agent.read_log()
    finally:
        agent.stop()
    assert_not_forged(log)


@pytest.fixture
def service_process(tmp_path: Path, rules_dir: Path) -> Iterator[tuple[subprocess.Popen, Path, Path]]:
    """The daemon as the Windows service runs it (``configure_logging``: a rotated file), as a real process."""
    config, hostile = config_watching_a_hostile_folder(tmp_path, rules_dir)
    logs = tmp_path / "logs"
    script = (
        "import sys\n"
        "from agent.winservice import configure_logging\n"
        "configure_logging(sys.argv[1])\n"
        "from agent.config import load_config\n"
        "from agent.daemon import Daemon\n"
        "Daemon(load_config(sys.argv[2])).run()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(logs), str(config)])
    try:
        yield proc, logs / LOG_FILE, hostile
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_the_service_log_file_gets_a_hostile_folder_name_on_one_line(service_process: tuple[subprocess.Popen, Path, Path]) -> None:
    proc, log, hostile = service_process
    wait_for(lambda: log.exists() and "running on" in log.read_text(errors="replace"), timeout=30, message="the service's log")
    shutil.rmtree(hostile)
    wait_for(lambda: "went away" in log.read_text(errors="replace"), timeout=20, message="the folder's removal logged")
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert_not_forged(log.read_text(errors="replace"))


def test_an_exception_quoting_a_name_stays_inside_its_traceback(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(TerminalFormatter("dlp-agent: %(levelname)s: %(message)s"))
    plain = logging.StreamHandler(open(tmp_path / "other.log", "w"))  # a handler formatting first caches exc_text
    logger = logging.getLogger("tests.log_forging")
    logger.propagate = False
    logger.addHandler(plain)
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"cannot scan {HOSTILE}")
        except ValueError:
            logger.exception("failed to process %s", "FileWork")
    finally:
        logger.removeHandler(plain)
        logger.removeHandler(handler)
        plain.close()
        handler.close()
    log = path.read_text()
    assert_not_forged(log)
    assert "ValueError: cannot scan Desk<U+000A>dlp-agent: ERROR: FORGED" in log
    assert "Traceback (most recent call last):\n  File " in log  # the traceback's own layout is kept


def test_a_thread_the_agent_does_not_run_dies_into_the_log_not_raw_onto_stderr(tmp_path: Path) -> None:
    # `dlp-agent run`'s set-up: main()'s stderr handler, then the hook run() installs.
    script = (
        "import logging, sys, threading\n"
        "from agent.cli.run import log_uncaught_thread_errors\n"
        "from agent.display import TerminalFormatter\n"
        "handler = logging.StreamHandler()\n"
        "handler.setFormatter(TerminalFormatter('dlp-agent: %(levelname)s: %(message)s'))\n"
        "logging.basicConfig(level=logging.WARNING, handlers=[handler])\n"
        "log_uncaught_thread_errors()\n"
        "def observe():\n"
        "    raise ValueError('cannot watch ' + sys.argv[1])\n"
        "thread = threading.Thread(target=observe, name='watchdog-emitter')\n"
        "thread.start()\n"
        "thread.join()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, HOSTILE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "dlp-agent: ERROR: watchdog-emitter stopped on an unexpected error" in done.stderr
    assert_not_forged(done.stderr)
