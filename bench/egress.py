"""Egress figures: how many short-lived `git push` processes a running agent turns into `git.push` events, and how fast.

Usage: python bench/egress.py [--pushes 200] [--baseline 40] [--gap-ms 50] [--settle-s 15] [--agent-root DIR] [--keep]
Starts a real `dlp-agent run` (egress on; files watch an empty folder; usb and clipboard off) with a
protected folder holding a git repository, then pushes a new commit from it ``--pushes`` times, each push
its own `git push` process: mostly to a bare repository over file:// and a plain path, some through an
ssh stand-in (GIT_SSH_COMMAND, as for a real ssh remote) and some over smart HTTP to `git http-backend`
on 127.0.0.1. It then counts the `git.push` events in the agent's spool, matches each to its push (by
the push's pid, else by the commit pushed) and prints, per transport, the pushes made, events seen,
the share, how long a push took with the agent running and (``--baseline`` pushes made before it
started) without it, and the time from the push's end to its event being spooled (median and max;
negative when the event was spooled before `git push` returned).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent import events as contract  # noqa: E402
from agent.spool import Spool, SpoolError  # noqa: E402
from tests.git_remotes import GitHttpServer, git, git_env, make_bare, make_repo, ssh_stand_in  # noqa: E402

# One round of ten pushes: mostly the file transports, some ssh and http.
ROUND = ("file", "file", "file", "file", "path", "file", "ssh", "http", "path", "ssh")
SOURCE = {
    "src/billing/invoice.py": "def total(lines):\n    return sum(line.amount for line in lines)\n" * 20,
    "src/billing/__init__.py": "",
    "README.md": "Customer billing service. PROPRIETARY AND CONFIDENTIAL.\n",
}


@dataclass
class Push:
    """One `git push` the bench made, and the event it was matched to."""

    number: int
    transport: str
    pid: int
    head: str
    started: float
    ended: float
    event_at: float | None = None
    events: int = 0


@dataclass
class Run:
    pushes: list[Push] = field(default_factory=list)
    baseline: list[Push] = field(default_factory=list)
    """The same pushes made before the agent started: what a push costs without it."""
    unmatched: int = 0
    agent_cpu_s: float = 0.0
    egress_health: str = ""
    health_after: dict[str, str] = field(default_factory=dict)
    """The process and egress sources' health messages once the pushes were matched (execs, gone, lost)."""
    wall_s: float = 0.0


def write_config(work: Path, protected: Path) -> Path:
    watched = work / "watched"
    watched.mkdir()
    config = work / "agent.toml"
    config.write_text(
        f'[files]\nwatch = ["{watched}"]\n[usb]\nenabled = false\n[clipboard]\nenabled = false\n'
        f'[protected]\nfolders = ["{protected}"]\n[egress]\nenabled = true\n'
        f'[spool]\npath = "spool.db"\nmax_bytes = 268435456\n[scan]\nnice = 0\n'
    )
    return config


def sources(spool: Path) -> dict[str, Any]:
    try:
        reader = Spool.open_readonly(str(spool))
    except SpoolError:
        return {}
    try:
        return dict(reader.get_state("sources") or {})
    finally:
        reader.close()


def wait(condition: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def start_agent(work: Path, config: Path, agent_root: str) -> subprocess.Popen[bytes]:
    log = open(work / "agent.log", "wb")
    env = dict(os.environ, PYTHONPATH=agent_root)
    argv = [sys.executable, "-m", "agent.cli.main", "run", "--config", str(config)]
    proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=agent_root, env=env)
    log.close()
    spool = work / "spool.db"
    if not wait(lambda: sources(spool).get("files", {}).get("state") == "ok" or proc.poll() is not None, 120):
        raise SystemExit("the agent did not come up in 120 s; see agent.log")
    if proc.poll() is not None:
        raise SystemExit(f"the agent exited ({proc.returncode}):\n{(work / 'agent.log').read_text(errors='replace')[-3000:]}")
    # An egress source, once the daemon has one, is ready when its health says ok.
    wait(lambda: sources(spool).get("egress", {}).get("state") in ("ok", "degraded", "off"), 10)
    return proc


def spooled_pushes(spool: Path) -> list[tuple[float, dict[str, Any]]]:
    """(spooled at, event) of every git.push in the spool. Read with SQL: the spool's readers give
    bodies only, and the latency wanted is to the moment the event became durable (``created_at``)."""
    db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT created_at, body FROM events ORDER BY seq").fetchall()
    finally:
        db.close()
    found = []
    for created_at, body in rows:
        event = json.loads(body)
        if event.get("type") == contract.GIT_PUSH:
            found.append((float(created_at), event))
    return found


def pids_of(event: dict[str, Any]) -> set[int]:
    process = event.get("process") or {}
    pids = {process.get("pid"), process.get("ppid")}
    pids.update(parent.get("pid") for parent in process.get("parents") or [] if isinstance(parent, dict))
    return {pid for pid in pids if isinstance(pid, int)}


def match(run: Run, spool: Path) -> None:
    """Pair each git.push event with the push it reports: one whose pid is the event's process or a
    parent of it, else the push of the event's HEAD commit (each push sends a new commit)."""
    by_pid = {push.pid: push for push in run.pushes}
    by_head = {push.head: push for push in run.pushes}
    for made in run.pushes:
        made.events, made.event_at = 0, None
    run.unmatched = 0
    for spooled_at, event in spooled_pushes(spool):
        push = next((by_pid[pid] for pid in pids_of(event) if pid in by_pid), None)
        push = push or by_head.get(str((event.get("repository") or {}).get("head")))
        if push is None:
            run.unmatched += 1
            continue
        push.events += 1
        if push.event_at is None:
            push.event_at = spooled_at


def remotes(work: Path, server: GitHttpServer, stand_in: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Each transport's push URL and the environment its push needs."""
    bares = {name: make_bare(work / "remotes" / f"{name}.git") for name in ("file", "path", "ssh", "http")}
    return {
        "file": (f"file://{bares['file']}", {}),
        "path": (str(bares["path"]), {}),
        "ssh": (f"ssh://git@vendor-host.example{bares['ssh']}", {"GIT_SSH_COMMAND": str(stand_in)}),
        "http": (server.url("http.git"), {}),
    }


def push_once(repo: Path, number: int, transport: str, url: str, extra_env: dict[str, str]) -> Push:
    git(repo, "commit", "-q", "--allow-empty", "-m", f"change {number}")
    head = git(repo, "rev-parse", "HEAD").strip()
    started = time.time()
    proc = subprocess.Popen(["git", "push", "-q", url, "main"], cwd=repo, env=git_env(extra_env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=60)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"push {number} over {transport} failed: {err.decode(errors='replace')}")
    return Push(number, transport, proc.pid, head, started, ended)


def push_many(repo: Path, targets: dict[str, tuple[str, dict[str, str]]], count: int, gap_s: float, first: int = 0) -> list[Push]:
    made = []
    for number in range(first, first + count):
        transport = ROUND[number % len(ROUND)]
        url, extra_env = targets[transport]
        made.append(push_once(repo, number, transport, url, extra_env))
        time.sleep(gap_s)
    return made


def bench(pushes: int, baseline: int, gap_s: float, settle_s: float, work: Path, agent_root: str) -> Run:
    protected = work / "customer"
    repo = make_repo(protected / "billing", SOURCE)
    config = write_config(work, protected)
    stand_in = ssh_stand_in(work / "bin")
    run = Run()
    with GitHttpServer(work / "remotes") as server:
        targets = remotes(work, server, stand_in)
        run.baseline = push_many(repo, targets, baseline, gap_s, first=-baseline)
        agent = start_agent(work, config, agent_root)
        try:
            run.egress_health = str(sources(work / "spool.db").get("egress", {}).get("message") or "no egress source in the agent's health")
            cpu = psutil.Process(agent.pid)
            cpu0 = sum(cpu.cpu_times()[:2])
            begin = time.monotonic()
            run.pushes = push_many(repo, targets, pushes, gap_s)
            run.wall_s = time.monotonic() - begin
            spool = work / "spool.db"

            def all_seen() -> bool:
                match(run, spool)
                return all(push.events for push in run.pushes)

            wait(all_seen, settle_s, 0.25)
            match(run, spool)
            run.agent_cpu_s = sum(cpu.cpu_times()[:2]) - cpu0
            time.sleep(1.5)  # health is written when it changes, on the agent's own beat
            health = sources(spool)
            run.health_after = {name: str(health[name].get("message", "")) for name in ("processes", "egress", "pipeline") if name in health}
        finally:
            agent.terminate()
            agent.wait(30)
    return run


def ms(values: list[float], how: str) -> str:
    if not values:
        return "-"
    value = statistics.median(values) if how == "median" else max(values)
    return f"{value * 1000:.0f}"


def report(run: Run, work: Path) -> None:
    print(f"egress source: {run.egress_health}")
    print(f"{len(run.pushes)} pushes in {run.wall_s:.1f} s; agent CPU {run.agent_cpu_s:.2f} s ({1000 * run.agent_cpu_s / max(1, len(run.pushes)):.1f} ms per push)\n")
    header = f"{'transport':<10}{'pushes':>8}{'seen':>8}{'share':>8}{'push ms med':>13}{'no agent':>10}{'push ms max':>13}{'to event ms med':>17}{'to event ms max':>17}"
    print(header)
    print("-" * len(header))
    groups = sorted({p.transport for p in run.pushes}, key=ROUND.index)
    for name, chosen in [(g, [p for p in run.pushes if p.transport == g]) for g in groups] + [("all", run.pushes)]:
        seen = [p for p in chosen if p.events]
        lag = [p.event_at - p.ended for p in seen if p.event_at is not None]
        took = [p.ended - p.started for p in chosen]
        alone = [p.ended - p.started for p in run.baseline if name in ("all", p.transport)]
        share = f"{100 * len(seen) / len(chosen):.0f}%" if chosen else "-"
        print(f"{name:<10}{len(chosen):>8}{len(seen):>8}{share:>8}{ms(took, 'median'):>13}{ms(alone, 'median'):>10}{ms(took, 'max'):>13}{ms(lag, 'median'):>17}{ms(lag, 'max'):>17}")
    for name, message in run.health_after.items():
        print(f"{name} after the pushes: {message}")
    extra = sum(max(0, p.events - 1) for p in run.pushes)
    print(f"\nevents beyond one per push: {extra}; git.push events matching no push: {run.unmatched}")
    print(f"agent log: {work / 'agent.log'}" if work.exists() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--baseline", type=int, default=40, help="pushes made before the agent starts (push time without it)")
    parser.add_argument("--gap-ms", type=float, default=50, help="pause between one push's end and the next commit")
    parser.add_argument("--settle-s", type=float, default=15, help="how long to wait after the last push for missing events")
    parser.add_argument("--agent-root", default=ROOT, help="the source tree the agent runs from (another checkout, to compare versions)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (agent log, spool, repositories)")
    args = parser.parse_args()
    if shutil.which("git") is None:
        raise SystemExit("git is needed (make apt)")
    work = Path(tempfile.mkdtemp(prefix="egress-bench-"))
    try:
        run = bench(args.pushes, args.baseline, args.gap_ms / 1000, args.settle_s, work, os.path.abspath(args.agent_root))
        report(run, work if args.keep else Path("/nonexistent"))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
