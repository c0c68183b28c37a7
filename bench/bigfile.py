"""Peak memory scanning one large file: `dlp-agent scan` against raw yara-python.

Usage: python bench/bigfile.py [--gb 2] [--path FILE]
Raw yara-python maps the whole file, so its resident set grows with the file; the
agent scans overlapping chunks and should stay under 200 MB whatever the size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def make_file(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    block = ("\n".join(corpus.line_pool(3, 400_000)) + "\n").encode()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            piece = block[: min(left, len(block))]
            f.write(piece)
            left -= len(piece)


def measure(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--path", default=os.path.join(HERE, ".corpus", "big", "dump.txt"))
    args = parser.parse_args()
    size = int(args.gb * (1 << 30))
    make_file(args.path, size)
    packs = os.path.join(ROOT, "signatures", "packs")
    raw_code = (
        "import os, sys, yara\n"
        "d = sys.argv[1]\n"
        "r = yara.compile(filepaths={n[:-4]: os.path.join(d, n) for n in os.listdir(d) if n.endswith('.yar')})\n"
        "r.match(sys.argv[2], timeout=3600)\n"
    )
    rows = [
        ("raw yara-python match(filepath)", measure([sys.executable, "-c", raw_code, packs, args.path])),
        ("dlp-agent scan", measure([sys.executable, "-m", "agent.cli.main", "scan", "--json", "--timeout", "3600", args.path])),
    ]
    print(f"\none file of {size / (1 << 30):.1f} GiB, starter packs\n")
    print(f"{'contender':<34}{'seconds':>9}{'MB/s':>9}{'peak RSS MB':>13}")
    for name, (elapsed, rss) in rows:
        print(f"{name:<34}{elapsed:>9.1f}{size / 1e6 / elapsed:>9.0f}{rss:>13.0f}")


if __name__ == "__main__":
    main()
