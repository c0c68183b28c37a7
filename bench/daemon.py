"""Agent daemon figures: a burst of writes, close-to-spool latency, and the idle cost.

Usage: python bench/daemon.py [--files 10000] [--folders 1000] [--latency-samples 200] [--idle-seconds 60]
Runs a real `dlp-agent run` on a temporary tree (every write made an event with
`report_clean = true`, so the spool counts what was scanned) and prints a table.
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

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent.spool import Spool, SpoolError  # noqa: E402


def start_agent(work: str, watch: str, *, clipboard: bool) -> subprocess.Popen:
    config = os.path.join(work, "agent.toml")
    with open(config, "w") as f:
        f.write(
            f'[files]\nwatch = ["{watch}"]\nreport_clean = true\n'
            f"[usb]\nenabled = false\n[clipboard]\nenabled = {'true' if clipboard else 'false'}\n"
            f'[spool]\npath = "spool.db"\nmax_bytes = 1073741824\n[scan]\nnice = 0\n'
        )
    log = open(os.path.join(work, "agent.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "run", "--config", config], stdout=log, stderr=log, cwd=ROOT)
    wait(lambda: depth(work) is not None and watching(work), 60)
    return proc


def depth(work: str) -> int | None:
    try:
        reader = Spool.open_readonly(os.path.join(work, "spool.db"))
    except SpoolError:
        return None
    try:
        return reader.stats()["depth"]
    finally:
        reader.close()


def watching(work: str) -> bool:
    try:
        reader = Spool.open_readonly(os.path.join(work, "spool.db"))
    except SpoolError:
        return False
    try:
        files = (reader.get_state("sources") or {}).get("files", {})
        return files.get("state") == "ok"
    finally:
        reader.close()


def wait(condition, timeout: float, interval: float = 0.05) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out after {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start


def make_folders(watch: str, count: int) -> list[str]:
    folders = [os.path.join(watch, f"team{i // 100:02d}", f"proj{i:04d}") for i in range(count)]
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    return folders


def burst(files: int, folders: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        watch = os.path.join(work, "watched")
        dirs = make_folders(watch, folders)
        proc = start_agent(work, watch, clipboard=False)
        try:
            body = b"def handler(event):\n    return event\n" * 30
            start = time.monotonic()
            for i in range(files):
                with open(os.path.join(dirs[i % len(dirs)], f"file{i:05d}.py"), "wb") as f:
                    f.write(body + str(i).encode())
            written = time.monotonic() - start
            wait(lambda: (depth(work) or 0) >= files, 600, 0.1)
            total = time.monotonic() - start
            time.sleep(2)  # anything extra (a double) would show up here
            return {"files": files, "written_s": written, "spooled_s": total, "spooled": depth(work) or 0}
        finally:
            proc.terminate()
            proc.wait(30)


def latency(samples: int, size: int) -> list[float]:
    with tempfile.TemporaryDirectory() as work:
        watch = os.path.join(work, "watched")
        os.makedirs(watch)
        proc = start_agent(work, watch, clipboard=False)
        try:
            body = (b"x" * 63 + b"\n") * (size // 64)
            out = []
            for i in range(samples):
                before = depth(work) or 0
                path = os.path.join(watch, f"f{i}.txt")
                with open(path, "wb") as f:
                    f.write(body + str(i).encode())
                closed = time.monotonic()
                while (depth(work) or 0) <= before:
                    time.sleep(0.001)
                out.append(time.monotonic() - closed)
                time.sleep(0.05)
            return out
        finally:
            proc.terminate()
            proc.wait(30)


def idle(folders: int, seconds: float, *, clipboard: bool = True) -> dict[str, float]:
    display = _xvfb() if clipboard else None
    with tempfile.TemporaryDirectory() as work:
        watch = os.path.join(work, "watched")
        make_folders(watch, folders)
        env_display = os.environ.get("DISPLAY")
        if display:
            os.environ["DISPLAY"] = display[0]
        proc = start_agent(work, watch, clipboard=clipboard)
        try:
            p = psutil.Process(proc.pid)
            time.sleep(3)
            cpu0 = sum(p.cpu_times()[:2])
            time.sleep(seconds)
            cpu = sum(p.cpu_times()[:2]) - cpu0
            return {"cpu_pct": 100 * cpu / seconds, "rss_mb": p.memory_info().rss / 1e6, "clipboard": bool(display)}
        finally:
            proc.terminate()
            proc.wait(30)
            if display:
                display[1].terminate()
                if env_display is None:
                    os.environ.pop("DISPLAY", None)
                else:
                    os.environ["DISPLAY"] = env_display


def _xvfb() -> tuple[str, subprocess.Popen] | None:
    if not shutil.which("Xvfb"):
        return None
    number = 90 + os.getpid() % 50
    proc = subprocess.Popen(["Xvfb", f":{number}", "-nolisten", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return f":{number}", proc


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--folders", type=int, default=1_000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--idle-folders", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=60)
    args = parser.parse_args()

    b = burst(args.files, args.folders)
    small = latency(args.latency_samples, 1024)
    large = latency(max(20, args.latency_samples // 4), 1 << 20)
    i = idle(args.idle_folders, args.idle_seconds)

    print(f"\nburst: {b['files']} files into {args.folders} folders")
    print(f"  written in {b['written_s']:.1f}s; all spooled after {b['spooled_s']:.1f}s; spooled {b['spooled']} (missed {b['files'] - b['spooled']})")
    print("\nclose-write to spooled event (ms)")
    print(f"{'size':<8}{'n':>6}{'p50':>8}{'p99':>8}{'max':>8}")
    for name, values in (("1 KB", small), ("1 MB", large)):
        ms = [v * 1000 for v in values]
        print(f"{name:<8}{len(ms):>6}{statistics.median(ms):>8.1f}{pct(ms, 0.99):>8.1f}{max(ms):>8.1f}")
    print(f"\nidle, {args.idle_folders} folders watched, clipboard {'watched (Xvfb; CLIPBOARD and PRIMARY)' if i['clipboard'] else 'unavailable (no Xvfb)'}:")
    print(f"  CPU {i['cpu_pct']:.2f}% of a core over {args.idle_seconds:.0f}s, RSS {i['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
