"""`make run`: the whole product on one machine: a collector on SQLite and an enrolled local agent.

Everything lives under ./var: var/collector (the collector's data directory and the admin
login, kept so a second `make run` shows it again), var/agent (configuration, credentials,
spool) and var/demo (a customer repository the agent protects, a folder it watches, and
files to copy into it). Ctrl-C stops both processes cleanly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAR = os.environ.get("DLP_RUN_DIR") or os.path.join(ROOT, "var")
COLLECTOR_DIR = os.path.join(VAR, "collector")
AGENT_DIR = os.path.join(VAR, "agent")
DEMO = os.path.join(VAR, "demo")
WATCH = os.path.join(DEMO, "watch")
LOGIN_FILE = os.path.join(COLLECTOR_DIR, "admin-login.json")
VENDOR = "demo-vendor"

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import demo  # noqa: E402  (the demo workstation's files)

demo.DEMO = DEMO


def cli(module: str, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"{module} {args[0]} failed:\n{result.stderr.strip()}")
    return result.stdout


def admin_login() -> dict:
    if not os.path.exists(LOGIN_FILE):
        login = json.loads(cli("server.cli", "init", "--data-dir", COLLECTOR_DIR, "--json"))
        if not login.get("admin_password"):
            sys.exit(f"{COLLECTOR_DIR} was initialised without keeping the login; remove var/ and run again")
        fd = os.open(LOGIN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(login, handle)
        return login
    with open(LOGIN_FILE) as handle:
        return json.load(handle)


def pick_port() -> int:
    wanted = int(os.environ.get("DLP_PORT", "8765"))
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit("the collector stopped at start; see var/collector/serve.log")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit("the collector did not become healthy; see var/collector/serve.log")


def agent_config(url: str) -> str:
    clipboard = bool(os.environ.get("DISPLAY")) and bool(shutil.which("xclip") or shutil.which("xsel"))
    path = os.path.join(AGENT_DIR, "agent.toml")
    with open(path, "w") as handle:
        handle.write(
            f"""# Written by `make run`.
[server]
url = "{url}"
[files]
watch = ["{WATCH}"]
quiet_ms = 300
[protected]
folders = ["{os.path.join(DEMO, 'customer-repo')}"]
[usb]
enabled = true
[clipboard]
enabled = {'true' if clipboard else 'false'}
[spool]
path = "spool.db"
"""
        )
    return path


def _interrupt(*_: object) -> None:
    """SIGTERM stops `make run` the way Ctrl-C does."""
    raise KeyboardInterrupt


def main() -> int:
    os.makedirs(AGENT_DIR, exist_ok=True)
    if not os.path.isdir(os.path.join(DEMO, "customer-repo")):
        demo.build()
    os.makedirs(WATCH, exist_ok=True)
    fresh_collector = not os.path.exists(LOGIN_FILE)
    login = admin_login()
    port = pick_port()
    url = f"http://127.0.0.1:{port}"
    children: list[subprocess.Popen] = []

    def stop() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan the children
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        serve_log = open(os.path.join(COLLECTOR_DIR, "serve.log"), "ab")
        children.append(subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--data-dir", COLLECTOR_DIR, "--port", str(port)], stdout=serve_log, stderr=subprocess.STDOUT, cwd=ROOT))
        wait_healthy(url, children[0])
        config = agent_config(url)
        credentials = os.path.join(AGENT_DIR, "credentials.json")
        if fresh_collector and os.path.exists(credentials):
            os.unlink(credentials)  # an identity at a collector that no longer exists
        if not os.path.exists(credentials):
            token = json.loads(cli("server.cli", "token", "create", "--data-dir", COLLECTOR_DIR, "--vendor", VENDOR, "--json"))["token"]
            cli("agent.cli.main", "enroll", "--config", config, "--server", url, "--token", token)
        agent_log = open(os.path.join(AGENT_DIR, "agent.log"), "ab")
        children.append(subprocess.Popen([sys.executable, "-m", "agent.cli.main", "run", "--config", config], stdout=agent_log, stderr=subprocess.STDOUT, cwd=ROOT))
        time.sleep(1)
        if children[1].poll() is not None:
            sys.exit("the agent stopped at start; see var/agent/agent.log")
        rel = os.path.relpath(DEMO)
        print(
            f"""
DLP collector and agent are running.

  review UI       {url}/ui/events
  review API      {url}/docs   (events: {url}/api/v1/events)
  admin login     user {login['admin_user']}  password {login['admin_password']}
  API token       {login['api_token']}

The agent watches {os.path.relpath(WATCH)} and protects {rel}/customer-repo. Try:

  cp {rel}/outgoing/memo.txt {rel}/watch/
  curl -s -H "Authorization: Bearer {login['api_token']}" {url}/api/v1/events

Logs: {os.path.relpath(COLLECTOR_DIR)}/serve.log, {os.path.relpath(AGENT_DIR)}/agent.log. Ctrl-C stops both.
""",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("a process stopped unexpectedly; see the logs in var/", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping agent and collector...", flush=True)
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
