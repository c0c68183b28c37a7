"""`make run`'s product: collector and enrolled agent come up, a copy becomes an event, Ctrl-C stops both."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import requests

from tests.collector_env import free_port
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_run_product_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "DLP_RUN_DIR": str(tmp_path / "var"), "DLP_PORT": str(free_port())}
    env.pop("DISPLAY", None)
    log = tmp_path / "run.out"
    with open(log, "wb") as out:
        # Its own process group, so a failing test can still kill the collector and agent it starts.
        process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run_product.py")], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                   start_new_session=True)
        try:
            found = wait_for(lambda: re.search(r"API token\s+(\S+)", log.read_text()) or process.poll() is not None, timeout=90, message="make run ready")
            assert process.poll() is None, log.read_text()
            text = log.read_text()
            url = re.search(r"review API\s+(http://\S+)/docs", text).group(1)
            assert re.search(r"admin login\s+user admin\s+password \S+", text)
            token = found.group(1)
            demo = tmp_path / "var" / "demo"
            shutil.copy(demo / "outgoing" / "memo.txt", demo / "watch" / "memo.txt")

            def event() -> list:
                answer = requests.get(f"{url}/api/v1/events", headers={"Authorization": f"Bearer {token}"}, timeout=10)
                return [e for e in answer.json()["items"] if e["path"].endswith("watch/memo.txt")]

            (item,) = wait_for(event, timeout=30, interval=0.2, message="the copy reported at the collector")
            assert item["matches"][0]["rule"] == "proprietary_and_confidential"
            login = json.loads((tmp_path / "var" / "collector" / "admin-login.json").read_text())
            assert login["api_token"] == token
        finally:
            process.send_signal(signal.SIGINT)
            try:
                code = process.wait(60)
            finally:
                children = subprocess.run(["pgrep", "-f", str(tmp_path / "var")], capture_output=True, text=True).stdout.split()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
    assert code == 0, log.read_text()
    assert children == [], "make run left processes behind"
