"""Scan throughput: `dlp-agent scan --jobs N` against Debian's `yara -p N -r` and a raw yara-python loop.

Usage: python bench/scan.py [--text-mb 64] [--binary-mb 16] [--rounds 5] [--corpus DIR] [--no-raw]
Every contender is a whole process over the same files and the same rule packs, its output
to /dev/null. Prints a table; the ratios are what docs/performance.md records (this machine is
noisy, so compare within one run). Target: `--jobs N` >= 0.95 of `yara -p N -r` for N = 1, 2.
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
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
YARA = "yara"


RAW_LOOP = """
import os, sys, yara
rules_dir, listing = sys.argv[1], sys.argv[2]
rules = yara.compile(filepaths={n[:-4]: os.path.join(rules_dir, n) for n in sorted(os.listdir(rules_dir))})
with open(listing) as f:
    for path in f.read().splitlines():
        rules.match(path)
"""


def raw_loop(rules_dir: str, listing: str) -> float:
    """The baseline, in its own process like ours: compile, then rules.match(filepath) per file."""
    return timed([sys.executable, "-c", RAW_LOOP, rules_dir, listing])


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr.decode()}")
    return elapsed


def cli(rules_dir: str, root: str, jobs: int) -> float:
    """Our product as a user runs it: a process, JSON lines out."""
    return timed([sys.executable, "-m", "agent.cli.main", "scan", root, "--rules", rules_dir, "--json", "--jobs", str(jobs)])


def yara_argv(rules_dir: str, root: str, jobs: int) -> list[str]:
    """Debian's yara over the same tree: every pack listed (the CLI takes files, not a directory),
    each under the namespace our scanner gives it, so both compile the same rules."""
    packs = [f"{name[:-4]}:{os.path.join(rules_dir, name)}" for name in sorted(os.listdir(rules_dir)) if name.endswith(".yar")]
    return [YARA, "-w", "-p", str(jobs), "-r", *packs, root]


def yara_cli(rules_dir: str, root: str, jobs: int) -> float:
    return timed(yara_argv(rules_dir, root, jobs))


def same_findings(rules_dir: str, root: str) -> tuple[int, int]:
    """Check that both tools see the same files and rules: the (file, rule) pairs yara prints
    equal the ones our scan finds in the files themselves (members and decoded parts aside)."""
    ours = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "scan", root, "--rules", rules_dir, "--json"], capture_output=True, check=False
    )
    rows = [json.loads(line) for line in ours.stdout.splitlines()]
    found = {(r["path"], m["rule"]) for r in rows for m in r["matches"] if m["member"] is None}
    theirs = subprocess.run(yara_argv(rules_dir, root, 1), capture_output=True, check=False)
    pairs = {(path, rule) for rule, path in (line.split(" ", 1) for line in theirs.stdout.decode().splitlines())}
    if found != pairs:
        raise SystemExit(f"the tools disagree: {len(found - pairs)} pairs only ours, {len(pairs - found)} only yara's")
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
    args = parser.parse_args()
    if shutil.which(YARA) is None:
        raise SystemExit("the yara command-line tool is missing: apt-get install -y yara")
    root = args.corpus or os.path.join(HERE, ".corpus", f"scan-{args.text_mb}-{args.binary_mb}")

    print(f"corpus: {root} ({args.text_mb} MB text + {args.binary_mb} MB binaries), generating if needed...", flush=True)
    files = corpus.make_tree(root, text_mb=args.text_mb, binary_mb=args.binary_mb)
    rules_dir = corpus.write_rules(os.path.join(HERE, ".corpus", "rules-500x20"))
    total = sum(os.path.getsize(f) for f in files)
    listing = os.path.join(HERE, ".corpus", "files.txt")
    with open(listing, "w") as f:
        f.write("\n".join(files) + "\n")
    scanned, pairs = same_findings(rules_dir, root)
    on_disk = sum(len(names) for _, _, names in os.walk(root))  # the corpus's marker file too: both scan it
    if scanned != on_disk:
        raise SystemExit(f"our scan reported {scanned} files of {on_disk}")
    version = subprocess.run([YARA, "--version"], capture_output=True, text=True).stdout.strip()

    contenders: dict[str, Callable[[], float]] = {}
    if not args.no_raw:
        contenders["raw yara-python loop"] = lambda: raw_loop(rules_dir, listing)
    for jobs in (1, 2):
        contenders[f"yara -p {jobs} -r"] = lambda jobs=jobs: yara_cli(rules_dir, root, jobs)
        contenders[f"dlp-agent scan --jobs {jobs}"] = lambda jobs=jobs: cli(rules_dir, root, jobs)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders)
    for round_no in range(args.rounds):
        # Interleaved, the order reversed every other round: the ratios within a round share
        # the machine's state, and no contender always runs first (or right after another).
        for name in order if round_no % 2 == 0 else reversed(order):
            warm(files)
            times[name].append(contenders[name]())
        print(f"round {round_no + 1}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), flush=True)

    def versus(name: str, peer: str) -> float:
        """How fast ``name`` ran next to ``peer``: the median over rounds of peer time / our time."""
        return statistics.median(p / t for p, t in zip(times[peer], times[name]))

    print(f"\n{len(files)} files, {total / 1e6:.0f} MB, 500 rules x 20 literal strings, {args.rounds} rounds (order alternating)")
    print(f"same findings checked first: {pairs} (file, rule) pairs from both tools; {version}\n")
    print(f"{'contender':<26}{'best s':>8}{'median s':>10}{'MB/s':>8}{'vs yara -p N':>14}{'vs 1 job':>10}")
    for name, runs in times.items():
        median = statistics.median(runs)
        jobs = name.split()[-1] if name.startswith("dlp-agent") else name.split()[2] if name.startswith("yara") else "1"
        own_one = "yara -p 1 -r" if name.startswith("yara") else "dlp-agent scan --jobs 1"
        print(
            f"{name:<26}{min(runs):>8.2f}{median:>10.2f}{total / 1e6 / median:>8.1f}"
            f"{versus(name, f'yara -p {jobs} -r'):>14.2f}{versus(name, own_one):>10.2f}"
        )
    print("\nratios are medians of per-round ratios (target: dlp-agent scan --jobs N >= 0.95 of yara -p N -r)")


if __name__ == "__main__":
    main()
