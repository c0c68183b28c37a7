"""Agent daemon figures: a burst of writes, close-to-spool latency, the idle cost, and writer attribution.

Usage: python bench/daemon.py [--files 10000] [--folders 1000] [--latency-samples 200] [--idle-folders 10000 ...]
       [--idle-seconds 60] [--backend fanotify|inotify|both] [--parts burst,latency,idle,attribution]
       [--attribution-events 2000] [--clipboard-samples 50] [--against OTHER_CHECKOUT] [--binary dist/dlp-agent] [--enrolled]
Runs a real `dlp-agent run` on a temporary tree (every write made an event with
`report_clean = true`, so the spool counts what was scanned) and prints a table. With
``--backend both`` latency and idle figures are measured on fanotify and on inotify side by side;
``attribution`` measures the fanotify hub in this process (root only): CPU per event of the read
path with the writer's /proc read, and how often a short-lived ``cp`` is named.
The idle part, with the clipboard on (Xvfb), then copies ``--clipboard-samples`` texts to
CLIPBOARD and as many to PRIMARY with xclip, one at a time: copy-to-event is from xclip's return
(the selection is owned) to the spooled event, and RSS is read again after those scans.
``--against DIR`` runs the latency and idle parts on another checkout's agent too (its
``agent`` package, this interpreter and bench), alternating, with after/before ratios.
``--binary PATH`` adds the one-file binary (installer/dlp-agent.spec) to the idle part: PyInstaller's
bootloader runs the agent as its child, and both processes are reported (RSS each, CPU summed).
``--enrolled`` runs the idle part as deployed agents run: each agent is enrolled (by its own
``dlp-agent enroll``) to a ``dlp-server serve`` started on a loopback port over TLS with the
starter packs published as a signed bundle (bench/enrolled.py), and the idle window starts once
the collector has its first heartbeat and the agent runs the verified bundle. The collector is
stopped after the idle window, so the clipboard's events stay in the spool where the copies are timed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent import procinfo  # noqa: E402
from agent.sources.fanotify_hub import FanotifyHub  # noqa: E402
from agent.sources.losses import LossTracker  # noqa: E402
from agent.spool import Spool, SpoolError  # noqa: E402
from bench.enrolled import LocalCollector  # noqa: E402

INOTIFY_WATCHES = "/proc/sys/fs/inotify/max_user_watches"


def start_agent(work: str, watch: str, *, clipboard: bool, backend: str = "auto", tree: str = ROOT, collector: LocalCollector | None = None) -> subprocess.Popen:
    """``dlp-agent run`` of ``tree`` (a checkout, or the one-file binary), enrolled to ``collector`` first when given."""
    config = os.path.join(work, "agent.toml")
    with open(config, "w") as f:
        f.write(
            f'[files]\nwatch = ["{watch}"]\nreport_clean = true\nbackend = "{backend}"\n'
            f"[usb]\nenabled = false\n[clipboard]\nenabled = {'true' if clipboard else 'false'}\n"
            f'[spool]\npath = "spool.db"\nmax_bytes = 1073741824\n[scan]\nnice = 0\n'
        )
    log = open(os.path.join(work, "agent.log"), "wb")
    # cwd first on sys.path (-m): the agent package of ``tree``, before the editable install's.
    env = {**os.environ, "PYTHONPATH": tree}
    argv = [tree] if os.path.isfile(tree) else [sys.executable, "-m", "agent.cli.main"]
    cwd = work if os.path.isfile(tree) else tree
    if collector is not None:
        collector.enroll(argv, config, cwd=cwd, env=env)
    proc = subprocess.Popen([*argv, "run", "--config", config], stdout=log, stderr=log, cwd=cwd, env=env)
    wait(lambda: depth(work) is not None and watching(work), 600)
    if collector is not None:
        wait(lambda: state(work, "bundle_version") == collector.bundle_version and collector.heartbeats() > 0, 300, 0.2)
    return proc


def state(work: str, key: str) -> Any:
    """One value the agent keeps in its spool's state table (None before the spool exists)."""
    try:
        reader = Spool.open_readonly(os.path.join(work, "spool.db"))
    except SpoolError:
        return None
    try:
        return reader.get_state(key)
    finally:
        reader.close()


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


def latency(samples: int, size: int, backend: str = "auto", tree: str = ROOT) -> list[float]:
    with tempfile.TemporaryDirectory() as work:
        watch = os.path.join(work, "watched")
        os.makedirs(watch)
        proc = start_agent(work, watch, clipboard=False, backend=backend, tree=tree)
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


def idle(folders: int, seconds: float, *, clipboard: bool = True, backend: str = "auto", tree: str = ROOT, copies: int = 0, enrolled: bool = False) -> dict[str, Any]:
    display = _xvfb() if clipboard else None
    with tempfile.TemporaryDirectory() as work:
        watch = os.path.join(work, "watched")
        make_folders(watch, folders)
        env_display = os.environ.get("DISPLAY")
        if display:
            os.environ["DISPLAY"] = display[0]
        collector = LocalCollector(work) if enrolled else None
        proc: subprocess.Popen | None = None
        try:
            started = time.monotonic()
            proc = start_agent(work, watch, clipboard=clipboard, backend=backend, tree=tree, collector=collector)
            up_s = time.monotonic() - started
            boot = psutil.Process(proc.pid)
            # A one-file binary: PyInstaller's bootloader (proc) unpacks and runs the agent as its child.
            p = boot.children()[0] if os.path.isfile(tree) else boot
            everyone = [boot, p] if p is not boot else [p]
            ready_rss_mb = p.memory_info().rss / 1e6
            time.sleep(3)
            cpu0 = sum(sum(q.cpu_times()[:2]) for q in everyone)
            time.sleep(seconds)
            cpu = sum(sum(q.cpu_times()[:2]) for q in everyone) - cpu0
            out: dict[str, Any] = {
                "cpu_pct": 100 * cpu / seconds, "rss_mb": p.memory_info().rss / 1e6, "clipboard": bool(display),
                "up_s": up_s, "watches": _inotify_watches(p.pid), "message": _files_message(work),
                "smaps": _smaps_rollup(p.pid), "clipboard_mode": _clipboard_mode(work),
                "boot_rss_mb": boot.memory_info().rss / 1e6 if p is not boot else None,
                "enrolled": collector is not None, "ready_rss_mb": ready_rss_mb, "loaded": _loaded(p.pid),
            }  # fmt: skip
            if collector is not None:
                collector.stop()  # from here the spool only grows: copy_to_event counts its depth
            if display and copies:
                out["copy_ms"] = {selection: [1000 * t for t in copy_to_event(work, copies, selection)] for selection in ("clipboard", "primary")}
                out["rss_after_mb"] = p.memory_info().rss / 1e6
            return out
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
            if collector is not None:
                collector.stop()
            if display:
                display[1].terminate()
                if env_display is None:
                    os.environ.pop("DISPLAY", None)
                else:
                    os.environ["DISPLAY"] = env_display


def copy_to_event(work: str, samples: int, selection: str) -> list[float]:
    """Seconds from each copy (xclip returned: the selection is owned) to its spooled event (the
    text matches a starter rule: a clean copy makes no event)."""
    out = []
    for i in range(samples):
        before = depth(work) or 0
        # A file, not a pipe, for stderr: xclip forks a child that keeps owning the selection.
        with tempfile.TemporaryFile() as err:
            subprocess.run(["xclip", "-selection", selection], input=f"STRICTLY CONFIDENTIAL bench copy {selection} {i} {time.time()}".encode(), stderr=err, check=True)
        copied = time.monotonic()
        while (depth(work) or 0) <= before:
            if time.monotonic() - copied > 30:
                raise SystemExit(f"no event 30 s after copy {i} to {selection}")
            time.sleep(0.001)
        out.append(time.monotonic() - copied)
        time.sleep(0.1)
    return out


def _smaps_rollup(pid: int) -> dict[str, float]:
    """MB by kind (Rss, Pss, Anonymous, Shared_Clean, ...) from /proc/PID/smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return {p[0].rstrip(":"): int(p[1]) / 1024 for p in (line.split() for line in f) if len(p) == 3 and p[2] == "kB"}
    except OSError:
        return {}


# What an enrolled agent has loaded by now and an unenrolled one never does: TLS (requests, at the
# first heartbeat) and cryptography's library (the bundle's signature check).
LATE_LIBRARIES = {"ssl": "/_ssl.cpython", "cryptography": "cryptography/hazmat/bindings/_rust", "pydantic": "pydantic_core/_pydantic_core"}


def _loaded(pid: int) -> list[str]:
    """Which of LATE_LIBRARIES the process maps."""
    with open(f"/proc/{pid}/maps") as f:
        paths = {line.split()[-1] for line in f if len(line.split()) >= 6}
    return [name for name, part in LATE_LIBRARIES.items() if any(part in path for path in paths)]


def _clipboard_mode(work: str) -> str:
    reader = Spool.open_readonly(os.path.join(work, "spool.db"))
    try:
        sources = reader.get_state("sources") or {}
        return "; ".join(f"{name}: {h.get('message', h.get('state', ''))}" for name, h in sources.items() if "clipboard" in name or "primary" in name)
    finally:
        reader.close()


def _inotify_watches(pid: int) -> int:
    """inotify watches the agent holds (from its inotify descriptors' fdinfo)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    count += f.read().count("inotify wd:")
        except OSError:
            continue
    return count


def _files_message(work: str) -> str:
    reader = Spool.open_readonly(os.path.join(work, "spool.db"))
    try:
        return str((reader.get_state("sources") or {}).get("files", {}).get("message", ""))
    finally:
        reader.close()


class _Writers:
    """Takes the hub's events in place of a file source: only the writers, nothing else done, so
    the hub's own cost (read, parse, folder path, writer) is what the CPU time measures."""

    def __init__(self) -> None:
        self.losses = LossTracker()
        self.closed: list[dict[str, Any] | None] = []

    def file_closed(self, path: str, process: dict[str, Any] | None = None) -> None:
        self.closed.append(process)

    def file_created(self, path: str, reason: str = "moved", process: dict[str, Any] | None = None) -> None:
        pass

    def file_modified(self, path: str, process: dict[str, Any] | None = None) -> None:
        pass

    def file_moved_in(self, path: str, process: dict[str, Any] | None = None) -> None:
        pass

    def folder_moved_in(self, path: str, process: dict[str, Any] | None = None) -> None:
        pass

    def events_lost(self, root: str) -> None:
        pass


def attribution(events: int, cps: int) -> dict[str, float]:
    """The fanotify hub in this process: CPU per event handed on (read, parse, folder path, the
    writer's /proc read through the cache), the writer read alone (cached and not), and how often a
    ``cp`` of 1 KB, gone right after its close, is named."""
    hub = FanotifyHub()
    with tempfile.TemporaryDirectory() as work:
        root = os.path.join(work, "watched")
        os.makedirs(root)
        writers = _Writers()
        hub.watch(root, writers)
        hub.start()
        try:
            # One long-lived writer, many files: the per-pid cache at work, as with an editor or a file manager.
            script = "import sys\nfor i in range(int(sys.argv[2])):\n    open(f'{sys.argv[1]}/f{i}.txt', 'w').write(str(i))\n"
            busy0, handed0 = hub.busy_s, hub.dispatched
            subprocess.run([sys.executable, "-c", script, root, str(events)], check=True)
            wait(lambda: len(writers.closed) >= events, 120)
            per_event_us = 1e6 * (hub.busy_s - busy0) / max(1, hub.dispatched - handed0)
            small = os.path.join(work, "small.txt")
            with open(small, "w") as f:
                f.write("x" * 1024)
            before = len(writers.closed)
            for i in range(cps):
                subprocess.run(["cp", small, os.path.join(root, f"cp{i}.txt")], check=True)
            wait(lambda: len(writers.closed) >= before + cps, 60)
            named = sum(1 for p in writers.closed[before:] if p and p.get("exe"))
        finally:
            hub.unwatch(root, writers)
            hub.stop()
            hub.close()
    parent = os.getppid()
    rounds = 2000
    started = time.thread_time()
    for _ in range(rounds):
        procinfo.writer(parent)
    uncached_us = 1e6 * (time.thread_time() - started) / rounds
    cache = procinfo.WriterCache()
    started = time.thread_time()
    for _ in range(rounds):
        cache.writer(parent)
    cached_us = 1e6 * (time.thread_time() - started) / rounds
    return {"events": events, "per_event_us": per_event_us, "uncached_us": uncached_us, "cached_us": cached_us, "cps": cps, "named": named}


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
    parser.add_argument("--idle-folders", type=int, nargs="+", default=[10_000])
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--backend", choices=["fanotify", "inotify", "both", "auto"], default="auto")
    parser.add_argument("--parts", default="burst,latency,idle", help="comma-separated: burst, latency, idle, attribution")
    parser.add_argument("--attribution-events", type=int, default=2000)
    parser.add_argument("--attribution-cps", type=int, default=200)
    parser.add_argument("--clipboard-samples", type=int, default=50, help="copies per selection after the idle window (clipboard on)")
    parser.add_argument("--against", metavar="DIR", help="another checkout: latency and idle measured on its agent too, alternating")
    parser.add_argument("--binary", metavar="PATH", help="the one-file agent binary, measured idle beside the virtualenv's")
    parser.add_argument("--enrolled", action="store_true", help="idle agents enrolled to a local collector, after their first heartbeat and bundle check")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    backends = ["fanotify", "inotify"] if args.backend == "both" else [args.backend]
    trees = [("this", ROOT)] + ([("against", os.path.abspath(args.against))] if args.against else [])
    if args.against:
        print(f"this = {ROOT} ({_head(ROOT)}), against = {os.path.abspath(args.against)} ({_head(args.against)})")

    if "burst" in parts:
        b = burst(args.files, args.folders)
        print(f"\nburst: {b['files']} files into {args.folders} folders")
        print(f"  written in {b['written_s']:.1f}s; all spooled after {b['spooled_s']:.1f}s; spooled {b['spooled']} (missed {b['files'] - b['spooled']})")
    if "latency" in parts:
        print("\nclose-write to spooled event (ms)")
        print(f"{'tree':<9}{'backend':<10}{'size':<8}{'n':>6}{'p50':>8}{'p99':>8}{'max':>8}")
        p50: dict[tuple[str, str, str], float] = {}
        for backend in backends:
            for size, name, samples in ((1024, "1 KB", args.latency_samples), (1 << 20, "1 MB", max(20, args.latency_samples // 4))):
                for label, tree in trees:
                    ms = [v * 1000 for v in latency(samples, size, backend, tree)]
                    p50[label, backend, name] = statistics.median(ms)
                    print(f"{label:<9}{backend:<10}{name:<8}{len(ms):>6}{statistics.median(ms):>8.1f}{pct(ms, 0.99):>8.1f}{max(ms):>8.1f}")
                if args.against:
                    print(f"{'ratio':<9}{backend:<10}{name:<8}{'':>6}{p50['this', backend, name] / p50['against', backend, name]:>8.2f}  (p50, this / against)")
    if "idle" in parts:
        clipboard = args.backend == "auto"  # the backend comparison leaves the clipboard out
        _raise_inotify_watches(max(args.idle_folders) if "inotify" in backends or "auto" in backends else 0)
        print(f"\nidle over {args.idle_seconds:.0f}s, clipboard {'on' if clipboard else 'off'}, {'enrolled' if args.enrolled else 'not enrolled'}")
        print(f"{'tree':<9}{'backend':<10}{'folders':>9}{'CPU % core':>12}{'RSS MB':>8}{'anon':>6}{'watches':>9}{'up (s)':>8}  status")
        copies: list[tuple[str, dict[str, Any]]] = []
        for folders in args.idle_folders:
            for backend in backends:
                seen: dict[str, dict[str, Any]] = {}
                for label, tree in trees + ([("binary", os.path.abspath(args.binary))] if args.binary else []):
                    i = idle(folders, args.idle_seconds, clipboard=clipboard, backend=backend, tree=tree, copies=args.clipboard_samples, enrolled=args.enrolled)
                    seen[label] = i
                    anon = i["smaps"].get("Anonymous", 0.0)
                    print(f"{label:<9}{backend:<10}{folders:>9}{i['cpu_pct']:>12.2f}{i['rss_mb']:>8.1f}{anon:>6.0f}{i['watches']:>9}{i['up_s']:>8.1f}  {i['message']}")
                    if i["boot_rss_mb"] is not None:
                        print(f"{'':<19}bootloader parent process: RSS {i['boot_rss_mb']:.1f} MB (CPU above is both processes)")
                    if i["enrolled"]:
                        print(f"{'':<19}enrolled: RSS {i['ready_rss_mb']:.1f} MB at the first heartbeat and bundle check")
                    print(f"{'':<19}loaded: {', '.join(i['loaded']) or 'none'} of {', '.join(LATE_LIBRARIES)}")
                    if i["clipboard"]:
                        print(f"{'':<19}clipboard: {i['clipboard_mode']}")
                    if "copy_ms" in i:
                        copies.append((label, i))
                if args.against:
                    this, other = seen["this"], seen["against"]
                    cpu_ratio = this["cpu_pct"] / other["cpu_pct"] if other["cpu_pct"] else float("nan")
                    print(f"{'ratio':<9}{backend:<10}{folders:>9}{cpu_ratio:>12.2f}{this['rss_mb'] / other['rss_mb']:>8.2f}  (this / against)")
        if copies:
            print(f"\ncopy to spooled event (ms), {args.clipboard_samples} copies per selection after the idle window")
            print(f"{'tree':<9}{'selection':<11}{'p50':>8}{'p99':>8}{'max':>8}{'RSS after':>11}")
            for label, i in copies:
                for selection, ms in i["copy_ms"].items():
                    print(f"{label:<9}{selection:<11}{statistics.median(ms):>8.1f}{pct(ms, 0.99):>8.1f}{max(ms):>8.1f}{i['rss_after_mb']:>10.1f}M")
    if "attribution" in parts:
        a = attribution(args.attribution_events, args.attribution_cps)
        print(f"\nwriter attribution (fanotify hub in this process, {a['events']} files by one writer)")
        print(f"  hub CPU per event handed on: {a['per_event_us']:.1f} us (read, parse, folder path, writer through the cache)")
        print(f"  writer() with 4 parents: {a['uncached_us']:.1f} us uncached, {a['cached_us']:.1f} us cached")
        print(f"  cp of 1 KB named with its executable: {a['named']} of {a['cps']}")
    print(f"\n(max RSS of this bench process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


def _head(tree: str) -> str:
    done = subprocess.run(["git", "-C", tree, "log", "-1", "--format=%h"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no", "agent"], capture_output=True, text=True)
    return (done.stdout.strip() or "?") + (" with uncommitted agent changes" if dirty.stdout.strip() else "")


def _raise_inotify_watches(folders: int) -> None:
    """inotify needs a watch per folder: make room for the run (said in the output), never lower it."""
    try:
        with open(INOTIFY_WATCHES) as f:
            current = int(f.read())
        if folders + 10_000 > current:
            with open(INOTIFY_WATCHES, "w") as f:
                f.write(f"{folders + 10_000}\n")
            print(f"(raised {INOTIFY_WATCHES} from {current} to {folders + 10_000} for this run)")
    except (OSError, ValueError) as exc:
        print(f"(cannot read or raise {INOTIFY_WATCHES}: {exc}; inotify may fall back to polling)")


if __name__ == "__main__":
    main()
