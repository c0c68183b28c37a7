"""Suite-wide checks after every test: each helper module loaded under one name, no thread or child process left behind."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import psutil
import pytest

TESTS_DIR = Path(__file__).resolve().parent
GRACE_S = 5.0
"""How long a thread or process a fixture has stopped may take to finish exiting before it counts as leaked."""
_reported: set[Path] = set()
"""Modules already reported as loaded twice: the test that first sees one fails, not every test after it."""


def duplicate_imports(modules: Mapping[str, ModuleType | None], root: Path = TESTS_DIR) -> dict[Path, list[str]]:
    """Files under ``root`` loaded as more than one module, with the names each was loaded under.

    Two names mean two copies of the module's state, fixtures and classes (``isinstance`` fails
    across them); ``tests/__init__.py`` makes ``tests.<module>`` the one name.
    """
    names: dict[Path, list[str]] = {}
    for name, module in list(modules.items()):
        file = getattr(module, "__file__", None)
        if file and root.name in file:  # cheap filter before resolving symlinks and ".."
            path = Path(file).resolve()
            if path.is_relative_to(root):
                names.setdefault(path, []).append(name)
    return {path: sorted(found) for path, found in names.items() if len(found) > 1}


def live_threads() -> set[threading.Thread]:
    # A _DummyThread stands for a thread Python did not start; it stays listed after that thread ends.
    return {t for t in threading.enumerate() if t.is_alive() and not isinstance(t, threading._DummyThread)}


def live_children() -> set[psutil.Process]:
    """Descendants of this process that still run (an exited child not yet reaped runs nothing)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.add(child)
        except psutil.NoSuchProcess:
            pass
    return found


def outliving(threads: set[threading.Thread], children: set[psutil.Process], grace_s: float = GRACE_S) -> tuple[list[threading.Thread], list[psutil.Process]]:
    """Threads and child processes that were not in ``threads`` and ``children`` and are still there after ``grace_s``."""
    deadline = time.monotonic() + grace_s
    while True:
        new_threads = sorted(live_threads() - threads, key=lambda t: t.name)
        new_children = sorted(live_children() - children, key=lambda p: p.pid)
        if (not new_threads and not new_children) or time.monotonic() >= deadline:
            return new_threads, new_children
        time.sleep(0.05)


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:200]}"
    except psutil.Error:
        return str(process.pid)


def kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=10)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a thread or a child process running, or a helper module loaded under a second name.

    Function-scoped fixtures the test uses are torn down before this check, and session- or
    module-scoped ones are set up before it looks, so what they own legitimately is not counted.
    A leaked process is killed, so it does not go on to disturb the tests after this one.
    """
    threads, children = live_threads(), live_children()
    yield
    faults = []
    new_threads, new_children = outliving(threads, children)
    if new_threads:
        faults.append("threads still running: " + ", ".join(f"{t.name} ({'daemon' if t.daemon else 'non-daemon'})" for t in new_threads))
    if new_children:
        faults.append("child processes still running (now killed): " + "; ".join(describe(p) for p in new_children))
        kill(new_children)
    duplicates = {path: names for path, names in duplicate_imports(sys.modules).items() if path not in _reported}
    if duplicates:
        _reported.update(duplicates)
        faults.append("helper modules loaded under two names (import them as tests.<module>): "
                      + "; ".join(f"{path.name} as {names}" for path, names in duplicates.items()))
    if faults:
        pytest.fail("\n".join(faults), pytrace=False)
