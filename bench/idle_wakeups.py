"""Where an idle agent's CPU goes: CPU and wakeups per thread, quiet and with other processes writing.

Usage: python bench/idle_wakeups.py [--folders 10000] [--seconds 60] [--writes 50] [--against OTHER_CHECKOUT]
       [--binary dist/dlp-agent] [--rounds 1]
Runs a real `dlp-agent run` (the default configuration's sources: files on ``--folders`` watched
folders, USB, CLIPBOARD and PRIMARY under its own Xvfb), lets it settle, then measures two windows
of ``--seconds``: quiet, and while a background writer (another process) writes ``--writes`` files a
second outside the watched roots, each few files in a fresh temporary folder, as test suites and
builds do. CPU is the agent's and its child processes' (the process-events reader); each thread's CPU comes from /proc/PID/task/TID/stat and its wakeups from its voluntary
context switches (each one a sleep that ended); threads are named by py-spy where it is installed
(Python threads keep the process's name in /proc). ``--against DIR`` measures another checkout's
agent (its ``agent`` package, this interpreter) in the same run, alternating, with after/before
ratios. After the second window, with the writer still going, ``--latency-samples`` files are written
under a root at random moments and timed from their close to their spooled event. ``--binary PATH`` adds the one-file binary (its bootloader and agent processes summed).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent.spool import Spool, SpoolError  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
FILES_PER_FOLDER = 4  # fewer than the hub's 32 events before it has the kernel ignore a folder


def write_config(work: str, watch: str) -> str:
    config = os.path.join(work, "agent.toml")
    with open(config, "w") as f:
        # report_clean: every file written under the roots becomes an event, so the spool times the latency samples.
        f.write(f'[files]\nwatch = ["{watch}"]\nreport_clean = true\n[spool]\npath = "spool.db"\n')
    return config


def start_agent(work: str, config: str, tree: str) -> tuple[subprocess.Popen, int]:
    """The agent started from ``tree`` (a checkout, or a one-file binary); (process started, agent's pid)."""
    log = open(os.path.join(work, "agent.log"), "wb")
    env = {**os.environ, "PYTHONPATH": tree}
    if os.path.isfile(tree):
        argv, cwd = [tree], work
    else:
        argv, cwd = [sys.executable, "-m", "agent.cli.main"], tree
    proc = subprocess.Popen([*argv, "run", "--config", config], stdout=log, stderr=log, cwd=cwd, env=env)
    deadline = time.monotonic() + 600
    while not _sources_ready(work):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the agent did not start (see {work}/agent.log)")
        time.sleep(0.1)
    pid = proc.pid
    if os.path.isfile(tree):
        children = _children(proc.pid)
        pid = children[0] if children else pid
    return proc, pid


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _sources_ready(work: str) -> bool:
    try:
        reader = Spool.open_readonly(os.path.join(work, "spool.db"))
    except SpoolError:
        return False
    try:
        sources = reader.get_state("sources") or {}
        return sources.get("files", {}).get("state") == "ok" and "usb" in sources
    finally:
        reader.close()


def sources_status(work: str) -> dict[str, str]:
    reader = Spool.open_readonly(os.path.join(work, "spool.db"))
    try:
        return {name: str(h.get("message", h.get("state", ""))) for name, h in (reader.get_state("sources") or {}).items()}
    finally:
        reader.close()


def threads(pid: int) -> dict[int, tuple[float, int]]:
    """tid -> (CPU seconds, voluntary context switches)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                switches = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", f.read(), re.M).group(1))  # type: ignore[union-attr]
        except (OSError, AttributeError):
            continue  # a thread that ended in between
        out[int(tid)] = ((int(fields[11]) + int(fields[12])) / TICKS, switches)
    return out


def _cpu_or_zero(pid: int) -> float:
    """CPU seconds of ``pid`` and its children waited for (0 once it is gone: a short-lived child)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICKS


def thread_names(pid: int) -> dict[int, str]:
    """tid -> Python thread name, from ``py-spy dump`` (empty without py-spy)."""
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        return {}
    try:
        dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {int(tid, 0): name for tid, name in re.findall(r'^Thread (\S+) \([^)]*\): "([^"]*)"', dump, re.M)}


class BackgroundWriter:
    """Another process's writes outside the roots: ``rate`` files a second, a fresh folder every few files."""

    def __init__(self, rate: int, base: str):
        self.rate = rate
        self.base = base
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="background-writer", daemon=True)

    def __enter__(self) -> BackgroundWriter:
        if self.rate > 0:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        folder = ""
        while not self._stop.is_set():
            if self.written % FILES_PER_FOLDER == 0:
                if folder:
                    shutil.rmtree(folder, ignore_errors=True)
                folder = tempfile.mkdtemp(prefix="bg-", dir=self.base)
            with open(os.path.join(folder, f"f{self.written}.txt"), "wb") as f:
                f.write(b"background write\n")
            self.written += 1
            self._stop.wait(max(0.0, started + self.written / self.rate - time.monotonic()))
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def descendants(pid: int) -> list[int]:
    out = []
    for child in _children(pid):
        out += [child, *descendants(child)]
    return out


def window(top: int, agent: int, seconds: float) -> dict[str, Any]:
    """CPU (% of a core) over ``seconds`` of ``top`` and every process under it (the process-events
    reader, a clipboard read's helper), and per thread of ``agent``."""
    pids = [top, *descendants(top)]
    before = threads(agent)
    cpu0 = {p: _cpu_or_zero(p) for p in pids}
    time.sleep(seconds)
    spent = {p: _cpu_or_zero(p) - cpu0.get(p, 0.0) for p in {*pids, *descendants(top)}}
    cpu = sum(spent.values())
    after = threads(agent)
    others = sum(c for p, c in spent.items() if p not in (top, agent))
    per = {}
    for tid, (cpu_s, switches) in after.items():
        cpu_b, switches_b = before.get(tid, (0.0, 0))
        per[tid] = (100 * (cpu_s - cpu_b) / seconds, (switches - switches_b) * 60 / seconds)
    return {"cpu_pct": 100 * cpu / seconds, "threads": per, "children_pct": 100 * others / seconds}


def depth(work: str) -> int:
    try:
        reader = Spool.open_readonly(os.path.join(work, "spool.db"))
    except SpoolError:
        return 0
    try:
        return int(reader.stats()["depth"])
    finally:
        reader.close()


def latency(work: str, folder: str, samples: int) -> list[float]:
    """Seconds from each close of a file written under a root to its spooled event, at random moments
    (a sample may fall in the fanotify reader's wait for other programs' events to gather)."""
    out = []
    for i in range(samples):
        before = depth(work)
        with open(os.path.join(folder, f"latency{i}.txt"), "w") as f:
            f.write("a latency sample\n")
        closed = time.monotonic()
        while depth(work) <= before:
            if time.monotonic() - closed > 30:
                raise SystemExit(f"no event 30 s after latency sample {i}")
            time.sleep(0.001)
        out.append(time.monotonic() - closed)
        time.sleep(random.uniform(0.1, 0.4))
    return out


def measure(tree: str, folders: int, seconds: float, rate: int, display: str, samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        watch = os.path.join(work, "watched")
        for i in range(folders):
            os.makedirs(os.path.join(watch, f"team{i // 100:02d}", f"proj{i:04d}"), exist_ok=True)
        config = write_config(work, watch)
        os.environ["DISPLAY"] = display
        proc, pid = start_agent(work, config, tree)
        try:
            time.sleep(5)  # start-up's last work (first clipboard reads, health writes)
            names = thread_names(pid)
            quiet = window(proc.pid, pid, seconds)
            with tempfile.TemporaryDirectory(prefix="idle-bg-") as base, BackgroundWriter(rate, base) as writer:
                busy = window(proc.pid, pid, seconds)
                written = writer.written
                lat = latency(work, os.path.join(watch, "team00", "proj0000"), samples)
            return {
                "quiet": quiet, "busy": busy, "names": names, "written": written, "latency": lat,
                "status": sources_status(work), "load": os.getloadavg()[0],
            }  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(30)


def table(label: str, result: dict[str, Any], rate: int, seconds: float) -> None:
    names = result["names"]
    print(f"\n{label}: CPU {result['quiet']['cpu_pct']:.3f}% quiet, {result['busy']['cpu_pct']:.3f}% with {rate} writes/s "
          f"({result['written'] / seconds:.0f}/s written), load {result['load']:.1f}")  # fmt: skip
    print(f"  {'thread':<28} {'CPU % quiet':>12} {'wakeups/min':>12} {'CPU % writes':>13} {'wakeups/min':>12}")
    quiet, busy = result["quiet"]["threads"], result["busy"]["threads"]
    rows = sorted(set(quiet) | set(busy), key=lambda t: -(busy.get(t, (0, 0))[0] + quiet.get(t, (0, 0))[0]))
    for tid in rows:
        q, b = quiet.get(tid, (0.0, 0.0)), busy.get(tid, (0.0, 0.0))
        if q[1] == 0 and b[1] == 0 and q[0] == 0 and b[0] == 0:
            continue
        print(f"  {names.get(tid, str(tid))[:28]:<28} {q[0]:>12.3f} {q[1]:>12.1f} {b[0]:>13.3f} {b[1]:>12.1f}")
    print(f"  {'(child processes)':<28} {result['quiet']['children_pct']:>12.3f} {'':>12} {result['busy']['children_pct']:>13.3f}")
    if result["latency"]:
        lat = sorted(result["latency"])
        pick = [1000 * lat[min(len(lat) - 1, int(q * len(lat)))] for q in (0.5, 0.9, 0.99)]
        print(f"  close to spooled event under the roots during the writes ({len(lat)}): p50 {pick[0]:.1f} ms, p90 {pick[1]:.1f} ms, p99 {pick[2]:.1f} ms")
    for name, message in sorted(result["status"].items()):
        if name in ("usb", "files") or "clipboard" in name or "primary" in name:
            print(f"  status {name}: {message}")


def xvfb() -> tuple[str, subprocess.Popen]:
    if not shutil.which("Xvfb"):
        raise SystemExit("Xvfb is needed (the clipboard sources watch CLIPBOARD and PRIMARY)")
    number = 150 + os.getpid() % 50
    proc = subprocess.Popen(["Xvfb", f":{number}", "-nolisten", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{number}"):
        if time.monotonic() > deadline:
            raise SystemExit("Xvfb did not start")
        time.sleep(0.05)
    return f":{number}", proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--writes", type=int, default=50, help="background writes a second in the second window")
    parser.add_argument("--against", metavar="DIR", help="another checkout, measured alternately in the same run")
    parser.add_argument("--binary", metavar="PATH", help="the one-file agent binary, measured too")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--latency-samples", type=int, default=40, help="files written under a root during the writes, after the busy window")
    args = parser.parse_args()
    display, server = xvfb()
    trees = [("after", ROOT)] + ([("before", os.path.abspath(args.against))] if args.against else [])
    trees += [("binary", os.path.abspath(args.binary))] if args.binary else []
    totals: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in trees}
    try:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load {os.getloadavg()}, {args.folders} folders, "
              f"{args.seconds:g} s windows, {args.writes} background writes/s")  # fmt: skip
        for round_ in range(args.rounds):
            order = trees if round_ % 2 == 0 else list(reversed(trees))
            for label, tree in order:
                result = measure(tree, args.folders, args.seconds, args.writes, display, args.latency_samples)
                table(f"{label} (round {round_ + 1})", result, args.writes, args.seconds)
                totals[label].append((result["quiet"]["cpu_pct"], result["busy"]["cpu_pct"]))
        print("\nsummary (CPU, % of a core: quiet / with writes)")
        for label, runs in totals.items():
            print(f"  {label:<8} " + ", ".join(f"{q:.3f} / {b:.3f}" for q, b in runs))
        if args.against:
            after = sum(q for q, _ in totals["after"]) / len(totals["after"]), sum(b for _, b in totals["after"]) / len(totals["after"])
            before = sum(q for q, _ in totals["before"]) / len(totals["before"]), sum(b for _, b in totals["before"]) / len(totals["before"])
            print(f"  after / before: quiet {after[0] / max(before[0], 1e-9):.2f}, with writes {after[1] / max(before[1], 1e-9):.2f}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
