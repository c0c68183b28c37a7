"""What watching every exec costs: the observer's CPU per exec and a real C build's time with and without it.

Usage: python bench/exec_load.py [--observer proc-events|agent] [--rounds 3] [--jobs 2] [--unfiltered]
                                 [--sdist Brotli-1.1.0.tar.gz] [--cflags "-O2"]

The build is the Brotli C library and its ``brotli`` command-line tool (32 C files: common,
decoder, encoder, tool), taken from Brotli's PyPI source distribution (``pip download
--no-binary :all: --no-deps brotli==1.1.0``, or ``--sdist`` for a file at hand) and built by a
Makefile this script writes over those sources with ``make -jN``: every file is a gcc, cc1 and as,
so the build starts a few hundred processes, and several times more with ``-O0``.

Rounds alternate (without, with, without, with...) so a drifting machine hurts both sides alike.
Observers:

- ``proc-events`` (the default: the reader's own cost): ``ProcessEvents`` alone, in a child
  process, with an ``on_exec`` that does what the agent's tracker does first (looks at the
  program's base name). Labelled ``ProcessEvents alone`` in the output.
- ``agent``: a real ``dlp-agent run`` with ``[egress] enabled = true`` and files, USB and clipboard
  off (reader, egress tracker and the rest of the daemon); its CPU is read from /proc, its exec
  count from the ``processes`` source in its status.

The machine's other work shows in every figure but the observer's CPU per exec: on a shared
machine, compare build times only over several rounds.

``--unfiltered`` adds rounds with the kernel BPF filter off (every fork and exit reaches the
reader), to show what the filter saves. Execs are counted machine-wide by the observer, so other
work on the machine during a round is included (the table shows how many execs the build alone
accounts for: its processes, counted from /proc/stat's fork counter, are close to them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SDIST = "brotli==1.1.0"
TOOLS = frozenset({"git", "scp", "sftp", "rsync", "curl", "wget", "rclone", "ssh"})

OBSERVE = """
import json, os, resource, sys
from agent.sources.proc_events import ProcessEvents
tools = frozenset(sys.argv[2].split(","))
hits = 0
def on_exec(start):
    global hits
    if start.argv and os.path.basename(start.argv[0]) in tools:
        hits += 1
source = ProcessEvents(on_exec, kernel_filter=sys.argv[1] == "filtered")
source.start()
before = resource.getrusage(resource.RUSAGE_SELF)  # start-up and imports are not the reader's work
print(json.dumps({"available": source.available, "reason": source.reason}), flush=True)
sys.stdin.read()
source.stop()
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
print(json.dumps({"cpu_s": cpu, "execs": source.execs, "gone": source.gone,
                  "lost": source.lost, "datagrams": source.datagrams, "others": source.others, "hits": hits}), flush=True)
"""


HEALTH_WAIT_S = 2.5


@dataclass
class Round:
    observer: str
    build_s: float
    forks: int
    cpu_s: float | None = None
    execs: int | None = None
    gone: int | None = None
    lost: int | None = None
    datagrams: int | None = None


def forks_so_far() -> int:
    """The kernel's count of processes created since boot (/proc/stat ``processes``)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("processes "):
                return int(line.split()[1])
    raise RuntimeError("no processes line in /proc/stat")


def fetch_sources(sdist: str | None, work: Path) -> Path:
    """Brotli's C sources, unpacked under ``work``."""
    if sdist is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps", SDIST, "-d", str(work)], check=True)
        sdist = str(next(work.glob("[Bb]rotli-*.tar.gz")))
    with tarfile.open(sdist) as archive:
        archive.extractall(work, filter="data")
    top = next(p for p in work.iterdir() if p.is_dir() and (p / "c" / "include").is_dir())
    return top / "c"


def write_makefile(c_dir: Path, cflags: str) -> int:
    """A Makefile building every library file and the tool; returns how many C files."""
    sources = sorted(str(p.relative_to(c_dir)) for sub in ("common", "dec", "enc", "tools") for p in (c_dir / sub).glob("*.c"))
    objects = [s[:-2] + ".o" for s in sources]
    (c_dir / "Makefile").write_text(
        f"CFLAGS = {cflags} -Iinclude\n"
        f"OBJECTS = {' '.join(objects)}\n"
        "brotli: $(OBJECTS)\n\t$(CC) -o $@ $(OBJECTS) -lm\n"
        "%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n"
        "clean:\n\trm -f brotli $(OBJECTS)\n"
        ".PHONY: clean\n"
    )
    return len(sources)


def build(c_dir: Path, jobs: int) -> tuple[float, int]:
    subprocess.run(["make", "-s", "clean"], cwd=c_dir, check=True)
    forks = forks_so_far()
    started = time.perf_counter()
    subprocess.run(["make", "-s", f"-j{jobs}"], cwd=c_dir, check=True)
    return time.perf_counter() - started, forks_so_far() - forks


class ReaderAlone:
    """``ProcessEvents`` in a child process; its CPU and counters read when it stops."""

    def __init__(self, filtered: bool):
        self.proc = subprocess.Popen([sys.executable, "-c", OBSERVE, "filtered" if filtered else "unfiltered", ",".join(TOOLS)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        ready = json.loads(self.proc.stdout.readline())
        if not ready["available"]:
            self.stop()
            raise SystemExit(f"the proc connector is not available here: {ready['reason']}")

    def stop(self) -> dict:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        self.proc.wait(30)
        return json.loads(line) if line else {}


class AgentDaemon:
    """A real ``dlp-agent run`` with egress on and the other sources off."""

    def __init__(self, work: Path):
        rules = work / "rules"
        rules.mkdir(exist_ok=True)
        (rules / "bench.yar").write_text('rule bench_word { meta: severity = "high" strings: $w = "BENCH-WORD-31337" condition: $w }\n')
        self.config = work / "agent.toml"
        self.config.write_text("\n".join([
            "[files]", "watch = []", "[usb]", "enabled = false", "[clipboard]", "enabled = false",
            "[egress]", "enabled = true", "[rules]", f'dir = "{rules}"', "[spool]", f'path = "{work / "spool.db"}"', "",
        ]))
        self.log = open(work / "agent.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "run", "--config", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 30
        # Running, and its process source reporting (it starts after the status first says running).
        while (execs := self.execs()) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the agent did not start its process source; see {work / 'agent.log'}")
            time.sleep(0.2)
        time.sleep(HEALTH_WAIT_S)  # the start's own execs counted before the round begins
        self.cpu_start = self.cpu()
        self.execs_start = self.execs() or execs

    def status(self) -> dict:
        out = subprocess.run([sys.executable, "-m", "agent.cli.main", "status", "--config", str(self.config), "--json"], capture_output=True, text=True, cwd=ROOT)
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else {}

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def execs(self) -> int | None:
        found = re.search(r"proc connector: (\d+) execs", json.dumps(self.status()))
        return int(found.group(1)) if found else None

    def stop(self) -> dict:
        result: dict = {}
        if self.proc.poll() is None:
            result["cpu_s"] = self.cpu() - getattr(self, "cpu_start", 0.0)
            # The status is written every 2 s (and only when it changed): wait for the round's last execs in it.
            time.sleep(HEALTH_WAIT_S)
            execs, start = self.execs(), getattr(self, "execs_start", None)
            result["execs"] = execs - start if execs is not None and start is not None else None
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return result


def exec_loop(count: int) -> tuple[float, int]:
    """``count`` runs of /bin/true from one shell: the purest exec load there is."""
    forks = forks_so_far()
    started = time.perf_counter()
    subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {count} ]; do /bin/true; i=$((i+1)); done"], check=True)
    return time.perf_counter() - started, forks_so_far() - forks


def observed_round(args: argparse.Namespace, work: Path, filtered: bool, load: str, run: Callable[[], tuple[float, int]]) -> Round:
    label = ("ProcessEvents alone" if args.observer == "proc-events" else "dlp-agent run") + ("" if filtered else ", no BPF filter")
    observer: ReaderAlone | AgentDaemon = ReaderAlone(filtered) if args.observer == "proc-events" else AgentDaemon(work)
    try:
        seconds, forks = run()
    finally:
        result = observer.stop()
    return Round(f"{load}: {label}", seconds, forks, result.get("cpu_s"), result.get("execs"), result.get("gone"), result.get("lost"), result.get("datagrams"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observer", choices=["proc-events", "agent"], default="proc-events")
    parser.add_argument("--rounds", type=int, default=10, help="a 2 s build varies by 10%% between runs: the median of many rounds is the figure")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cflags", default="-O0", help="-O0 (the default) starts processes faster, closer to a big project's build")
    parser.add_argument("--execs", type=int, default=2000, help="runs of /bin/true in the exec loop rounds")
    parser.add_argument("--sdist", help="Brotli's source distribution (.tar.gz) instead of downloading it")
    parser.add_argument("--unfiltered", action="store_true", help="also rounds with the kernel filter off (proc-events only)")
    args = parser.parse_args()
    if args.unfiltered and args.observer != "proc-events":
        parser.error("--unfiltered needs --observer proc-events")

    work = Path(tempfile.mkdtemp(prefix="exec_load-"))
    try:
        c_dir = fetch_sources(args.sdist, work)
        files = write_makefile(c_dir, args.cflags)
        print(f"build: Brotli 1.1.0 C sources from its PyPI sdist, {files} C files, own Makefile, make -j{args.jobs}, CFLAGS={args.cflags}")
        build(c_dir, args.jobs)  # warm the page cache and gcc before anything is timed
        rounds: list[Round] = []
        loads: list[tuple[str, Callable[[], tuple[float, int]]]] = [
            ("build", lambda: build(c_dir, args.jobs)),
            (f"{args.execs} x /bin/true", lambda: exec_loop(args.execs)),
        ]
        for index in range(args.rounds):
            for load, run in loads:
                # Which goes first alternates, so a drift of the machine (caches, clock, neighbours) cancels out.
                if index % 2:
                    rounds.append(observed_round(args, work, True, load, run))
                seconds, forks = run()
                rounds.append(Round(f"{load}: none", seconds, forks))
                if not index % 2:
                    rounds.append(observed_round(args, work, True, load, run))
                if args.unfiltered:
                    rounds.append(observed_round(args, work, False, load, run))
        report(rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(rounds: list[Round]) -> None:
    print(f"\n{'load: observer':<52} {'time s':>8} {'procs/min':>10} {'execs':>7} {'datagrams':>9} {'gone':>5} {'lost':>5} {'obs CPU s':>9} {'µs/exec':>8}")
    for r in rounds:
        per_min = r.forks / r.build_s * 60
        per_exec = f"{r.cpu_s / r.execs * 1e6:8.0f}" if r.cpu_s is not None and r.execs else f"{'-':>8}"
        cells = [f"{v:>{w}}" if v is not None else f"{'-':>{w}}" for v, w in ((r.execs, 7), (r.datagrams, 9), (r.gone, 5), (r.lost, 5))]
        cpu = f"{r.cpu_s:9.3f}" if r.cpu_s is not None else f"{'-':>9}"
        print(f"{r.observer:<52} {r.build_s:8.2f} {per_min:10.0f} {' '.join(cells)} {cpu} {per_exec}")
    print()
    for label in dict.fromkeys(r.observer for r in rounds if not r.observer.endswith(": none")):
        load = label.split(": ")[0]
        base = [r.build_s for r in rounds if r.observer == f"{load}: none"]
        mine = [r for r in rounds if r.observer == label]
        times = [r.build_s for r in mine]
        cpu_s = sum(r.cpu_s or 0.0 for r in mine)
        exec_count = sum(r.execs or 0 for r in mine)
        each = f", {cpu_s / exec_count * 1e6:.0f} µs CPU per exec" if exec_count else ""
        print(f"{label}: median {statistics.median(times):.2f} s vs {statistics.median(base):.2f} s without "
              f"(ratio {statistics.median(times) / statistics.median(base):.3f}); observer {cpu_s:.2f} s CPU for {exec_count} execs{each}")


if __name__ == "__main__":
    main()
