"""The suite's own checks can fail: a helper loaded under two names, a thread or a child process left running."""

from __future__ import annotations

import subprocess
import sys
import threading
from types import ModuleType

from tests import collector_env
from tests.hygiene import TESTS_DIR, duplicate_imports, kill, live_children, live_threads, outliving


def test_every_helper_module_is_loaded_under_one_name() -> None:
    assert duplicate_imports(sys.modules) == {}
    assert sys.modules["tests.collector_env"] is collector_env


def test_a_helper_loaded_under_a_second_name_is_found() -> None:
    # What `sys.path.insert(0, "tests"); import collector_env` would add beside tests.collector_env.
    second = ModuleType("collector_env")
    second.__file__ = str(TESTS_DIR / "collector_env.py")
    found = duplicate_imports({**sys.modules, "collector_env": second})
    assert found == {TESTS_DIR / "collector_env.py": ["collector_env", "tests.collector_env"]}


def test_a_thread_left_running_is_found_and_one_that_ends_in_the_grace_time_is_not() -> None:
    threads, children = live_threads(), live_children()
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="left-running", daemon=True)
    thread.start()
    try:
        assert outliving(threads, children, grace_s=0.2) == ([thread], [])
        threading.Timer(0.1, release.set).start()
        assert outliving(threads, children, grace_s=5) == ([], [])
    finally:
        release.set()
        thread.join(5)


def test_a_child_process_left_running_is_found_and_killed() -> None:
    threads, children = live_threads(), live_children()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _, found = outliving(threads, children, grace_s=0.2)
        assert [p.pid for p in found] == [child.pid]
        kill(found)  # reaps it too, so Popen can no longer learn its exit status
        assert child.poll() is not None
        assert outliving(threads, children, grace_s=0.2) == ([], [])
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
