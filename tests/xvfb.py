"""A real X server for tests: Xvfb on a free display, with xvfb and xclip installed by apt when missing."""

from __future__ import annotations

import functools
import os
import select
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# Executables the X tests run, and the Debian package that ships each.
REQUIRED = {"Xvfb": "xvfb", "xclip": "xclip"}
SOCKET_DIR = Path("/tmp/.X11-unix")
FIRST_DISPLAY = 50  # above what desktops and `xvfb-run` (99 down) usually take
LAST_DISPLAY = 400
START_TIMEOUT_S = 15.0
APT_TIMEOUT_S = 90  # per apt-get call; three of them must fit in pytest's 300 s test timeout


def _missing_packages() -> list[str]:
    return sorted({package for exe, package in REQUIRED.items() if shutil.which(exe) is None})


def _apt(*args: str) -> subprocess.CompletedProcess:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    command = [*prefix, "apt-get", *args]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 1, "", f"timed out after {APT_TIMEOUT_S}s")


def _install(packages: list[str]) -> str | None:
    """Install ``packages`` with apt; return why that was impossible, or None on success."""
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        return f"missing {' '.join(packages)}: not root and no sudo to install them"
    if shutil.which("apt-get") is None:
        return f"missing {' '.join(packages)}: no apt-get on this machine"
    install = _apt("install", "-y", "-qq", *packages)
    if install.returncode != 0:
        # A fresh image often has no package lists yet; refresh once and try again.
        update = _apt("update", "-qq")
        if update.returncode != 0:
            return f"apt-get update failed: {update.stderr.strip()[-500:]}"
        install = _apt("install", "-y", "-qq", *packages)
        if install.returncode != 0:
            return f"apt-get install {' '.join(packages)} failed: {install.stderr.strip()[-500:]}"
    still = _missing_packages()
    return f"installed but still missing: {' '.join(still)}" if still else None


def _display_taken(number: int) -> bool:
    return (SOCKET_DIR / f"X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists()


def _start(number: int, log_path: Path) -> subprocess.Popen | None:
    """Start Xvfb on ``:number`` and wait until it is ready; None when another server holds the display."""
    # -displayfd: Xvfb writes the display number there once it accepts connections, and exits without
    # writing when the display is taken, so readiness is our server's own word; a connect() could be
    # answered by a server some parallel test started on the same number.
    # -noreset: by default the server resets whenever its last client leaves, which with short-lived
    # xclip clients means a connection now and then lands mid-reset and fails.
    read_fd, write_fd = os.pipe()
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                ["Xvfb", f":{number}", "-screen", "0", "1024x768x24", "-nolisten", "tcp", "-noreset"]
                + ["-displayfd", str(write_fd)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                pass_fds=(write_fd,),
            )
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        readable, _, _ = select.select([ready], [], [], START_TIMEOUT_S)
        announced = ready.readline().strip() if readable else None
    if announced == str(number).encode():
        return proc
    _terminate(proc)
    if announced is None:
        raise RuntimeError(f"Xvfb :{number} was not ready within {START_TIMEOUT_S}s: {log_path.read_text()}")
    if announced == b"" and _display_taken(number):
        return None
    raise RuntimeError(f"Xvfb :{number} failed ({announced!r}): {log_path.read_text()}")


def _terminate(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@functools.cache
def _install_missing() -> str | None:
    missing = _missing_packages()
    return _install(missing) if missing else None


def require_x_tools() -> None:
    """Make sure Xvfb and xclip exist, installing them once per session; skip the test with the reason if impossible."""
    reason = _install_missing()
    if reason:
        pytest.skip(reason)


def unused_display() -> str:
    """A display name no X server answers, outside the numbers ``xvfb_display`` hands out (tests run in parallel)."""
    for number in range(LAST_DISPLAY, LAST_DISPLAY + 1000):
        if not _display_taken(number):
            return f":{number}"
    raise RuntimeError(f"no free X display from :{LAST_DISPLAY}")


@pytest.fixture
def xvfb_display(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A fresh Xvfb for one test; DISPLAY points at it for the test's duration. Yields the display string."""
    require_x_tools()
    log_path = tmp_path / "xvfb.log"
    for number in range(FIRST_DISPLAY, LAST_DISPLAY):
        if _display_taken(number):
            continue
        proc = _start(number, log_path)
        if proc is not None:
            break
    else:
        pytest.fail(f"no free X display between :{FIRST_DISPLAY} and :{LAST_DISPLAY - 1}")
    display = f":{number}"
    monkeypatch.setenv("DISPLAY", display)
    # Wayland would take precedence over X in pyperclip's choice of mechanism.
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    try:
        yield display
    finally:
        _terminate(proc)
