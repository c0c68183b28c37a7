"""What reading watermarks costs the agent's scanner: the same files scanned with and without it.

Run: ``python bench/marks_scan.py [--rounds 5] [--files 3000]``. The corpus is what this machine
carries: text files under /usr/share/doc (compressed ones left out) and the Python standard
library. Rounds alternate the two scanners and the median of each is compared, since a 2-core
machine is too noisy for one pair of runs.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.scanning.engine import Scanner  # noqa: E402
from agent.scanning.limits import ScanLimits  # noqa: E402
from agent.scanning.rules import load_rules  # noqa: E402

PACKS = Path(__file__).resolve().parent.parent / "signatures" / "packs"


def corpus(limit: int) -> list[str]:
    docs = [f for f in glob.glob("/usr/share/doc/**/*", recursive=True) if os.path.isfile(f) and not os.path.islink(f) and not f.endswith(".gz")]
    code = glob.glob("/usr/lib/python3*/**/*.py", recursive=True)
    return sorted(docs)[:limit] + sorted(code)[:limit]


def scan_all(files: list[str], *, marks: bool) -> float:
    scanner = Scanner(load_rules(PACKS), limits=ScanLimits(), cache=None)
    if not marks:
        scanner._marks = lambda job, data, member: None  # type: ignore[method-assign]
    started = time.perf_counter()
    for path in files:
        scanner.scan_path(path)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=3000, help="files of each kind")
    args = parser.parse_args()
    files = corpus(args.files)
    size = sum(os.path.getsize(f) for f in files)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for marks in (False, True):
            times[marks].append(scan_all(files, marks=marks))
    without, with_marks = statistics.median(times[False]), statistics.median(times[True])
    print(f"command: python bench/marks_scan.py --rounds {args.rounds} --files {args.files}")
    print(f"{'scanner':<28} {'files':>6} {'MB':>7} {'median s':>9} {'MB/s':>7}")
    for label, seconds in (("without reading marks", without), ("with reading marks", with_marks)):
        print(f"{label:<28} {len(files):>6} {size / 1e6:>7.1f} {seconds:>9.2f} {size / seconds / 1e6:>7.1f}")
    print(f"ratio (with / without throughput): {without / with_marks:.3f}")


if __name__ == "__main__":
    main()
