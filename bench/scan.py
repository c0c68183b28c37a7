"""Scan throughput: `dlp-agent scan` against a raw yara-python loop on the same files and rules.

Usage: python bench/scan.py [--text-mb 200] [--rounds 5] [--corpus DIR]
Prints a table; the ratios are what docs/performance.md records (this machine is noisy,
so compare within one run). Targets: 1 job >= 0.9 of raw, 2 jobs >= 1.6x of 1 job.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


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


def warm(files: list[str]) -> None:
    """Read every file so each contender starts from the page cache (this VM evicts eagerly)."""
    for path in files:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-mb", type=int, default=200)
    parser.add_argument("--binary-mb", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--corpus", default=os.path.join(HERE, ".corpus", "scan"))
    args = parser.parse_args()

    print(f"corpus: {args.corpus} ({args.text_mb} MB text + {args.binary_mb} MB binaries), generating if needed...", flush=True)
    files = corpus.make_tree(args.corpus, text_mb=args.text_mb, binary_mb=args.binary_mb)
    rules_dir = corpus.write_rules(os.path.join(HERE, ".corpus", "rules-500x20"))
    total = sum(os.path.getsize(f) for f in files)
    listing = os.path.join(HERE, ".corpus", "files.txt")
    with open(listing, "w") as f:
        f.write("\n".join(files) + "\n")

    contenders = {
        "raw yara-python loop": lambda: raw_loop(rules_dir, listing),
        "dlp-agent scan --jobs 1": lambda: cli(rules_dir, args.corpus, 1),
        "dlp-agent scan --jobs 2": lambda: cli(rules_dir, args.corpus, 2),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_no in range(args.rounds):
        # Interleaved: each round runs every contender back to back, so ratios within a
        # round share the machine's state; the median of those ratios is what we report.
        for name, run in contenders.items():
            warm(files)
            times[name].append(run())
        print(f"round {round_no + 1}: " + ", ".join(f"{n} {t[-1]:.1f}s" for n, t in times.items()), flush=True)

    raw, one, two = (times[n] for n in contenders)
    vs_raw = {n: statistics.median(r / t for r, t in zip(raw, times[n])) for n in contenders}
    vs_one = {n: statistics.median(o / t for o, t in zip(one, times[n])) for n in contenders}
    print(f"\n{len(files)} files, {total / 1e6:.0f} MB, 500 rules x 20 literal strings, {args.rounds} interleaved rounds\n")
    print(f"{'contender':<26}{'best s':>8}{'median s':>10}{'MB/s':>8}{'vs raw':>8}{'vs 1 job':>10}")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(
            f"{name:<26}{min(runs):>8.2f}{median:>10.2f}{total / 1e6 / median:>8.1f}"
            f"{vs_raw[name]:>8.2f}{vs_one[name]:>10.2f}"
        )
    print("\nratios are medians of per-round ratios (targets: 1 job >= 0.90 of raw, 2 jobs >= 1.60x of 1 job)")


if __name__ == "__main__":
    main()
