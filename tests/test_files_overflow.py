"""The kernel's event queue (inotify's or fanotify's) overflowing under a real `dlp-agent run`: the loss is an event and nothing written is missed."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_process import Agent, write_config
from tests.conftest import SECRET_WORD
from tests.waiting import wait_for

QUEUE_LIMITS = {"inotify": Path("/proc/sys/fs/inotify/max_queued_events"), "fanotify": Path("/proc/sys/fs/fanotify/max_queued_events")}
BURST = 5000


@pytest.fixture(params=["inotify", "fanotify"])
def agent_with_a_small_queue(tmp_path: Path, rules_dir: Path, request: pytest.FixtureRequest) -> Iterator[Agent]:
    """An agent whose inotify instance (or fanotify group) was made while the kernel's queue limit was 64 events.

    The limit is taken when an instance is created, so it is restored as soon as the agent watches.
    """
    limit = QUEUE_LIMITS[request.param]
    try:
        old = limit.read_text()
        limit.write_text("64\n")
    except OSError as exc:
        pytest.skip(f"cannot lower {limit}: {exc}")
    try:
        agent = Agent(write_config(tmp_path, rules_dir, files=f'backend = "{request.param}"'))
        try:
            wait_for(lambda: "watching 1 folder" in agent.status().get("sources", {}).get("files", {}).get("message", ""), timeout=15, message="watch up")
        except BaseException:
            agent.stop(signal.SIGKILL)
            raise
    finally:
        limit.write_text(old)
    yield agent
    agent.stop(signal.SIGKILL)


def test_a_burst_that_overflows_the_kernel_queue_is_reported_and_rescanned(agent_with_a_small_queue: Agent, tmp_path: Path) -> None:
    agent = agent_with_a_small_queue
    desktop = tmp_path / "Desktop"
    leak = desktop / f"f{BURST // 2}.py"
    # Thousands of tiny files, the code copied in the middle, while the agent is held off the CPU
    # (as on a loaded machine): far more events than its queue holds.
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        subprocess.run(
            [
                sys.executable, "-c",
                "import sys\n"
                "root, n, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
                "for i in range(n):\n"
                "    with open(f'{root}/f{i}.py', 'w') as f:\n"
                "        f.write(f'key = {secret!r}\\n' if i == n // 2 else 'x = 1\\n')\n",
                str(desktop), str(BURST), SECRET_WORD,
            ],
            check=True,
            timeout=60,
        )  # fmt: skip
    finally:
        agent.proc.send_signal(signal.SIGCONT)

    def kinds() -> set[str]:
        return {e["type"] for e in agent.events()}

    (match,) = wait_for(lambda: [e for e in agent.events() if e.get("path") == str(leak)], timeout=60, message="the code's event")
    assert (match["type"], match["status"]) == ("file.write", "match")
    wait_for(lambda: "source.events_lost" in kinds(), timeout=30, message="source.events_lost")
    (lost, *_) = [e for e in agent.events() if e["type"] == "source.events_lost"]
    assert lost["channel"] == "agent" and lost["path"] == str(desktop)
    assert "events were lost" in lost["reason"]
    # The status is written every HEALTH_INTERVAL_S (2 s): the event can be spooled before it shows.
    files = wait_for(lambda: _degraded(agent), timeout=10, message="the files source reads degraded")
    assert "events were lost" in files["message"]


def _degraded(agent: Agent) -> dict | None:
    files = agent.status().get("sources", {}).get("files", {})
    return files if files.get("state") == "degraded" else None
