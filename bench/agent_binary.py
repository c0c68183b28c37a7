"""The one-file agent binary: its size, and `dlp-agent version` start-up against the virtualenv's.

Usage: python bench/agent_binary.py [--binary dist/dlp-agent] [--runs 30]
Builds the binary with installer/dlp-agent.spec (as `make agent-binary` does) unless --binary
names one. Both commands run interleaved, one of each per round, so a busy moment hits both.
Targets (the installer issue): binary <= 35 MB, start-up <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "installer", "dlp-agent.spec")


def build(workdir: str) -> str:
    """The binary, built into ``workdir`` (a build takes about half a minute)."""
    print("building the agent binary with PyInstaller...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
         "--distpath", os.path.join(workdir, "dist"), "--workpath", os.path.join(workdir, "build"), SPEC],
        check=True, cwd=workdir,
    )
    return os.path.join(workdir, "dist", "dlp-agent")


def venv_command() -> list[str]:
    """`dlp-agent` as pip installs it: the console script beside this interpreter, else ``-m``."""
    script = os.path.join(os.path.dirname(sys.executable), "dlp-agent")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "agent.cli.main"]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([*argv, "version"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", help="an existing binary (default: build one into a temporary folder)")
    parser.add_argument("--runs", type=int, default=30, help="rounds; each runs both commands once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlp-agent-binary-") as workdir:
        binary = os.path.abspath(args.binary) if args.binary else build(workdir)
        contenders = {"one-file binary": [binary], "virtualenv (pip install)": venv_command()}
        for argv in contenders.values():
            timed(argv)  # warm the page cache once for each
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.runs):
            for name, argv in contenders.items():
                times[name].append(timed(argv))
        size_mb = os.path.getsize(binary) / 1e6

    print(f"\nbinary size: {size_mb:.1f} MB ({size_mb * 1e6 / (1 << 20):.1f} MiB; target <= 35 MB)")
    print(f"`dlp-agent version`, {args.runs} interleaved rounds (target <= 1 s)\n")
    print(f"{'command':<28}{'median s':>10}{'p90 s':>8}")
    for name in contenders:
        print(f"{name:<28}{statistics.median(times[name]):>10.3f}{p90(times[name]):>8.3f}")
    binary_times, venv_times = times.values()
    ratios = [b / v for b, v in zip(binary_times, venv_times)]
    print(f"\nbinary / virtualenv: median of per-round ratios {statistics.median(ratios):.2f}")
    print(f"(virtualenv command: {' '.join(contenders['virtualenv (pip install)'])})")


if __name__ == "__main__":
    main()
