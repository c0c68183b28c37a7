"""Scan throughput: `dlp-agent scan --jobs N` against Debian's `yara -p N -r` and a raw yara-python loop.

Usage: python bench/scan.py [--text-mb 64] [--binary-mb 16] [--rounds 5] [--corpus DIR] [--no-raw]
                            [--against CHECKOUT]
Every contender is a whole process over the same files and the same rule packs, its output
to /dev/null; its time is the wall clock from start to exit, and its CPU the user and system
time of its whole process tree. `--against` adds another checkout's `scan --jobs N` (the code
before a change) to the same rounds. Prints a table; the ratios are what docs/performance.md
records (this machine is noisy, so compare within one run).
Target (issue 20): `dlp-agent scan --jobs N` >= 0.95 of `yara -p N -r` for N = 1, 2.
The yara command-line tool comes from the `yara` package (`apt-get install -y yara`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
YARA = "yara"
JOBS = (1, 2)

RAW_LOOP = """
import os, sys, yara
rules_dir, listing = sys.argv[1], sys.argv[2]
rules = yara.compile(filepaths={n[:-4]: os.path.join(rules_dir, n) for n in sorted(os.listdir(rules_dir))})
with open(listing) as f:
    for path in f.read().splitlines():
        rules.match(path)
"""


@dataclass
class Contender:
    name: str
    argv: list[str]
    peer: str
    """The contender its ratio is taken against."""
    one_job: str
    """The same tool with one job, for the scaling column."""
    cwd: str = CHECKOUT
    """Where ``python -m agent...`` finds the agent package: this checkout, or the one --against names."""
    env: dict[str, str] | None = None
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    def run(self) -> None:
        start = time.perf_counter()
        proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.cwd, env=self.env)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)  # the child's resources and its reaped children's
        self.walls.append(time.perf_counter() - start)
        self.cpus.append(usage.ru_utime + usage.ru_stime)
        if os.waitstatus_to_exitcode(status) not in (0, 1):
            raise SystemExit(f"{self.name} failed: {err.decode(errors='replace')}")


def installed_env() -> dict[str, str]:
    """The environment our scan runs in, with its modules byte-compiled as any install has them
    (pip and the .deb compile them; the one-file binary carries them compiled). A shell that sets
    PYTHONDONTWRITEBYTECODE would otherwise time the compilation of every agent module on every
    run, about 35 ms of CPU that no user pays. The compiled files go under bench/.corpus, not
    into the checkouts."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(HERE, ".corpus", "pycache")
    return env


def byte_compile(checkout: str, env: dict[str, str]) -> None:
    """Compile a checkout's agent package before timing it (see ``installed_env``)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "agent"], cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL)


def scan_argv(rules_dir: str, root: str, jobs: int) -> list[str]:
    """Our product as a user runs it: a process, JSON lines out."""
    return [sys.executable, "-m", "agent.cli.main", "scan", root, "--rules", rules_dir, "--json", "--jobs", str(jobs)]


def yara_argv(rules_dir: str, root: str, jobs: int) -> list[str]:
    """Debian's yara over the same tree: every pack listed (the CLI takes files, not a directory),
    each under the namespace our scanner gives it, so both compile the same rules."""
    packs = [f"{name[:-4]}:{os.path.join(rules_dir, name)}" for name in sorted(os.listdir(rules_dir)) if name.endswith(".yar")]
    return [YARA, "-w", "-p", str(jobs), "-r", *packs, root]


def plant(rules_dir: str, folder: str) -> None:
    """Files that each carry the strings of one pack's first rule, so the findings check sees matches
    (the corpus's files take their lines at random and match no rule)."""
    os.makedirs(folder, exist_ok=True)
    for name in sorted(os.listdir(rules_dir)):
        with open(os.path.join(rules_dir, name)) as f:
            first_rule = f.read().split("condition:")[0]
        strings = [json.loads(line.split(" = ", 1)[1]) for line in first_rule.splitlines() if line.strip().startswith("$s")]
        with open(os.path.join(folder, name[:-4] + ".py"), "w") as f:
            f.write("\n".join(strings) + "\n")


def same_findings(rules_dir: str, root: str) -> tuple[int, int]:
    """Check that both tools see the same files and rules: the (file, rule) pairs yara prints
    equal the ones our scan finds in the files themselves (members and decoded parts aside)."""
    ours = subprocess.run(scan_argv(rules_dir, root, 1), capture_output=True, check=False)
    rows = [json.loads(line) for line in ours.stdout.splitlines()]
    found = {(r["path"], m["rule"]) for r in rows for m in r["matches"] if m["member"] is None}
    theirs = subprocess.run(yara_argv(rules_dir, root, 1), capture_output=True, check=False)
    pairs = {(path, rule) for rule, path in (line.split(" ", 1) for line in theirs.stdout.decode().splitlines())}
    if found != pairs:
        raise SystemExit(f"the tools disagree: {len(found - pairs)} pairs only ours, {len(pairs - found)} only yara's")
    on_disk = sum(len(names) for _, _, names in os.walk(root))  # the corpus's marker file too: both scan it
    if len(rows) != on_disk:
        raise SystemExit(f"our scan reported {len(rows)} files of {on_disk}")
    return len(rows), len(found)


def warm(files: list[str]) -> None:
    """Read every file so each contender starts from the page cache (this VM evicts eagerly)."""
    for path in files:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-mb", type=int, default=64)
    parser.add_argument("--binary-mb", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--corpus", default=None, help="default: bench/.corpus/scan-TEXT-BINARY")
    parser.add_argument("--no-raw", action="store_true", help="leave out the raw yara-python loop")
    parser.add_argument("--against", metavar="CHECKOUT", help="also time this checkout's scan (git worktree add DIR REV)")
    args = parser.parse_args()
    if shutil.which(YARA) is None:
        raise SystemExit("the yara command-line tool is missing: apt-get install -y yara")
    if args.against and not os.path.isfile(os.path.join(args.against, "agent", "cli", "scan.py")):
        parser.error(f"--against {args.against}: not a checkout of this project")
    root = args.corpus or os.path.join(HERE, ".corpus", f"scan-{args.text_mb}-{args.binary_mb}")

    print(f"corpus: {root} ({args.text_mb} MB text + {args.binary_mb} MB binaries), generating if needed...", flush=True)
    files = corpus.make_tree(root, text_mb=args.text_mb, binary_mb=args.binary_mb)
    rules_dir = corpus.write_rules(os.path.join(HERE, ".corpus", "rules-500x20"))
    total = sum(os.path.getsize(f) for f in files)
    listing = os.path.join(HERE, ".corpus", "files.txt")
    with open(listing, "w") as f:
        f.write("\n".join(files) + "\n")
    planted = os.path.join(HERE, ".corpus", "scan-planted")
    plant(rules_dir, planted)
    _, planted_pairs = same_findings(rules_dir, planted)
    if planted_pairs != len(os.listdir(planted)):
        raise SystemExit(f"{planted_pairs} planted matches found, {len(os.listdir(planted))} planted")
    scanned, pairs = same_findings(rules_dir, root)
    version = subprocess.run([YARA, "--version"], capture_output=True, text=True).stdout.strip()

    env = installed_env()
    byte_compile(CHECKOUT, env)
    if args.against:
        byte_compile(args.against, env)
    contenders: list[Contender] = []
    if not args.no_raw:
        contenders.append(Contender("raw yara-python loop", [sys.executable, "-c", RAW_LOOP, rules_dir, listing], "yara -p 1 -r", "raw yara-python loop"))
    for jobs in JOBS:
        peer = f"yara -p {jobs} -r"
        contenders.append(Contender(peer, yara_argv(rules_dir, root, jobs), peer, "yara -p 1 -r"))
        contenders.append(Contender(f"dlp-agent scan --jobs {jobs}", scan_argv(rules_dir, root, jobs), peer, "dlp-agent scan --jobs 1", env=env))
        if args.against:
            before = Contender(f"before: scan --jobs {jobs}", scan_argv(rules_dir, root, jobs), peer, "before: scan --jobs 1", env=env)
            before.cwd = os.path.abspath(args.against)  # python -m puts the working directory first on the path
            contenders.append(before)
    for round_no in range(args.rounds):
        # Interleaved, the order reversed every other round: the ratios within a round share
        # the machine's state, and no contender always runs first (or right after another).
        for contender in contenders if round_no % 2 == 0 else reversed(contenders):
            warm(files)
            contender.run()
        print(f"round {round_no + 1}: " + ", ".join(f"{c.name} {c.walls[-1]:.2f}s" for c in contenders), flush=True)

    by_name = {c.name: c for c in contenders}

    def versus(contender: Contender, peer_name: str) -> float:
        """How fast ``contender`` ran next to a peer: the median over rounds of peer time / its time."""
        peer = by_name[peer_name]
        return statistics.median(p / t for p, t in zip(peer.walls, contender.walls))

    print(f"\n{len(files)} files, {total / 1e6:.0f} MB, 500 rules x 20 literal strings, {args.rounds} rounds (order alternating)")
    print(f"same findings checked first: {scanned} files, {pairs} (file, rule) pairs from both tools"
          f" (and {planted_pairs} of {planted_pairs} planted matches); yara {version}\n")
    print(f"{'contender':<26}{'best s':>8}{'median s':>10}{'MB/s':>8}{'CPU s':>8}{'vs yara -p N':>14}{'vs own 1 job':>14}")
    for c in contenders:
        median = statistics.median(c.walls)
        print(
            f"{c.name:<26}{min(c.walls):>8.2f}{median:>10.2f}{total / 1e6 / median:>8.1f}{statistics.median(c.cpus):>8.2f}"
            f"{versus(c, c.peer):>14.2f}{versus(c, c.one_job):>14.2f}"
        )
    print("\nratios are medians of per-round ratios of wall time; CPU s is the median of the process tree's user + system time")
    print("target (issue 20): dlp-agent scan --jobs N >= 0.95 of yara -p N -r")


if __name__ == "__main__":
    main()
