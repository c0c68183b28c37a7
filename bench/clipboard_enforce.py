"""Clipboard attribution and clearing figures: the cost of finding the selection's owner, and copy-to-cleared time.

Usage: python bench/clipboard_enforce.py [--samples 30]
Starts its own Xvfb and real xclip owners. Owner look-ups are timed for an xclip that stays in the
foreground (the X server's recorded pid is alive) and for xclip's usual fork (the recorded pid is
gone, so the forked child is found through sock_diag and /proc). Copy-to-cleared runs a real
`dlp-agent run` with `[clipboard] on_match = "clear"` and times each matching copy until a paste
reads the notice (paste polled every 5 ms, so figures are within about 10 ms).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent.sources.clipboard_clear import NOTICE  # noqa: E402
from agent.sources.xowner import owner_process  # noqa: E402
from bench import daemon as daemon_bench  # noqa: E402

SECRET = "ZEBRAFISH-PAYLOAD-7741"
RULE = f'rule secret_word {{ meta: severity = "high" strings: $w = "{SECRET}" condition: $w }}\n'


def xvfb() -> tuple[str, subprocess.Popen]:
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as ready:
        number = ready.readline().strip()
    return f":{number}", proc


def copy(text: str, *, foreground: bool = False) -> subprocess.Popen | None:
    argv = ["xclip", "-selection", "clipboard", *(["-quiet"] if foreground else [])]
    if foreground:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert proc.stdin is not None
        proc.stdin.write(text.encode())
        proc.stdin.close()
        return proc
    subprocess.run(argv, input=text.encode(), check=True, stderr=subprocess.DEVNULL)
    return None


def paste() -> str:
    return subprocess.run(["xclip", "-o", "-selection", "clipboard"], capture_output=True, timeout=10).stdout.decode()


def wait(condition: Callable[[], bool], timeout: float) -> float:
    return daemon_bench.wait(condition, timeout, interval=0.005)


def owner_times(samples: int, *, foreground: bool) -> list[float]:
    times = []
    for n in range(samples):
        proc = copy(f"sample {n} {time.time()}", foreground=foreground)
        wait(lambda: owner_process("clipboard") is not None, 10)
        start = time.perf_counter()
        found = owner_process("clipboard")
        times.append((time.perf_counter() - start) * 1000)
        assert found is not None and (found["exe"] or "").endswith("xclip"), found
        if proc is not None:
            proc.kill()
            proc.wait()
    return times


def clear_times(samples: int) -> list[float]:
    work = tempfile.mkdtemp(prefix="dlp-clip-bench-")
    rules = os.path.join(work, "rules")
    os.mkdir(rules)
    with open(os.path.join(rules, "secret.yar"), "w") as f:
        f.write(RULE)
    config = os.path.join(work, "agent.toml")
    with open(config, "w") as f:
        f.write(
            f'[files]\nwatch = []\n[usb]\nenabled = false\n[clipboard]\ninterval_ms = 500\nprimary = false\non_match = "clear"\n'
            f'[rules]\ndir = "{rules}"\n[spool]\npath = "spool.db"\n[scan]\nnice = 0\n'
        )
    log = open(os.path.join(work, "agent.log"), "wb")
    agent = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "run", "--config", config], stdout=log, stderr=log, cwd=ROOT)
    times = []
    try:
        time.sleep(3)  # the agent's first read is a baseline
        for n in range(samples):
            copy(f"harmless {n}")
            time.sleep(0.3)
            start = time.monotonic()
            copy(f"token {n} = {SECRET}")
            wait(lambda: paste() == NOTICE, 15)
            times.append((time.monotonic() - start) * 1000)
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return times


def row(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"| {label} | {len(values)} | {statistics.median(values):.1f} | {p99:.1f} | {max(values):.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    display, server = xvfb()
    os.environ["DISPLAY"] = display
    os.environ.pop("WAYLAND_DISPLAY", None)
    try:
        foreground = owner_times(args.samples, foreground=True)
        forked = owner_times(args.samples, foreground=False)
        cleared = clear_times(args.samples)
    finally:
        server.terminate()
        server.wait()
    print("\n| measured | samples | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    print(row("owner look-up, foreground xclip (X-Resource pid alive)", foreground))
    print(row("owner look-up, forking xclip (child found through sock_diag)", forked))
    print(row("matching copy to notice on the clipboard (dlp-agent, XFixes)", cleared))


if __name__ == "__main__":
    main()
