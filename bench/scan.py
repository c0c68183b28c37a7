"""Scan throughput: `dlp-agent scan` against a raw yara-python loop on the same files and rules.

Usage: python bench/scan.py [--text-mb 200] [--rounds 3] [--corpus DIR]
Prints a table; the ratios are what docs/performance.md records (this machine is noisy,
so compare within one run). Targets: 1 job >= 0.9 of raw, 2 jobs >= 1.6x of 1 job.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import yara

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def raw_loop(rules_dir: str, files: list[str]) -> float:
    """The baseline: compile, then rules.match(filepath) for every file."""
    start = time.perf_counter()
    packs = {os.path.splitext(n)[0]: os.path.join(rules_dir, n) for n in sorted(os.listdir(rules_dir))}
    rules = yara.compile(filepaths=packs)
    for path in files:
        rules.match(path)
    return time.perf_counter() - start


def cli(rules_dir: str, root: str, jobs: int) -> float:
    """Our product as a user runs it: a process, JSON lines out."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "scan", root, "--rules", rules_dir, "--json", "--jobs", str(jobs)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"dlp-agent scan failed: {proc.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-mb", type=int, default=200)
    parser.add_argument("--binary-mb", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpus", default=os.path.join(HERE, ".corpus", "scan"))
    args = parser.parse_args()

    print(f"corpus: {args.corpus} ({args.text_mb} MB text + {args.binary_mb} MB binaries), generating if needed...", flush=True)
    files = corpus.make_tree(args.corpus, text_mb=args.text_mb, binary_mb=args.binary_mb)
    rules_dir = corpus.write_rules(os.path.join(HERE, ".corpus", "rules-500x20"))
    total = sum(os.path.getsize(f) for f in files)
    for path in files:  # warm the page cache so every contender reads from memory
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass

    contenders = {
        "raw yara-python loop": lambda: raw_loop(rules_dir, files),
        "dlp-agent scan --jobs 1": lambda: cli(rules_dir, args.corpus, 1),
        "dlp-agent scan --jobs 2": lambda: cli(rules_dir, args.corpus, 2),
    }
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved rounds, best of each: noise hits all alike
        for name, run in contenders.items():
            elapsed = run()
            best[name] = min(best.get(name, elapsed), elapsed)

    raw = best["raw yara-python loop"]
    one = best["dlp-agent scan --jobs 1"]
    print(f"\n{len(files)} files, {total / 1e6:.0f} MB, 500 rules x 20 literal strings, best of {args.rounds}\n")
    print(f"{'contender':<28}{'seconds':>9}{'MB/s':>9}{'vs raw':>9}{'vs 1 job':>10}")
    for name, elapsed in best.items():
        print(f"{name:<28}{elapsed:>9.2f}{total / 1e6 / elapsed:>9.1f}{raw / elapsed:>9.2f}{one / elapsed:>10.2f}")


if __name__ == "__main__":
    main()
