"""Who owns the clipboard: real xclip owners under Xvfb, found through X-Resource, _NET_WM_PID and sock_diag."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from agent.sources.clipboard import ClipboardSource, no_notifications
from agent.sources.work import ClipboardWork, Work
from agent.sources.xowner import _net_wm_pid, owner_pid, owner_process, socket_holders, unix_sockets
from tests.test_clipboard import copy
from tests.waiting import wait_for
from tests.xvfb import require_x_tools, unused_display


def xclip_owners(display: str, selection: str = "clipboard") -> list[psutil.Process]:
    """The live ``xclip`` processes holding ``selection`` on ``display`` (xclip exits when another client takes it)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        argv = process.info["cmdline"] or []
        if process.info["name"] != "xclip" or "-o" in argv or selection not in argv:
            continue
        try:
            if process.environ().get("DISPLAY") == display:
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def display_without_xres(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An Xvfb without the X-Resource extension (as older or other X servers): only _NET_WM_PID can tell."""
    require_x_tools()
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-noreset", "-extension", "X-Resource"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as ready:
            display = f":{ready.readline().strip()}"
        monkeypatch.setenv("DISPLAY", display)
        yield display
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def foreground_xclip(xvfb_display: str) -> Iterator[subprocess.Popen]:
    """An xclip that owns CLIPBOARD without forking (``-quiet`` keeps it in the foreground)."""
    proc = subprocess.Popen(
        ["xclip", "-selection", "clipboard", "-quiet"], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"copied by a foreground xclip")
    proc.stdin.close()
    try:
        wait_for(lambda: owner_pid("clipboard") is not None, message="xclip owning the clipboard")
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_foreground_owner_is_the_pid_the_x_server_recorded(foreground_xclip: subprocess.Popen) -> None:
    process = owner_process("clipboard")
    assert process is not None
    assert process["pid"] == foreground_xclip.pid
    assert process["exe"] == os.path.realpath("/usr/bin/xclip")
    assert process["cmdline"] == "xclip -selection clipboard -quiet"
    assert process["uid"] == os.getuid() and process["user"]
    # Parents, nearest first: this test's own process started xclip.
    assert process["ppid"] == os.getpid() and process["parents"][0]["pid"] == os.getpid()


def test_a_forking_owner_is_found_through_its_connection(xvfb_display: str) -> None:
    # xclip's usual way: connect, take the selection, fork, and let the parent (the pid X recorded) exit.
    copy("copied by a forking xclip")
    (live,) = xclip_owners(xvfb_display)
    process = owner_process("clipboard")
    assert process is not None and process["pid"] == live.pid
    assert process["exe"] == os.path.realpath("/usr/bin/xclip")


def test_nobody_owning_or_no_display_is_none(xvfb_display: str) -> None:
    assert owner_process("clipboard") is None
    assert owner_process("primary") is None
    assert owner_process("clipboard", unused_display()) is None


def test_net_wm_pid_is_read_when_the_window_says_it_runs_here(xvfb_display: str) -> None:
    from Xlib import X, Xatom
    from Xlib import display as xdisplay

    display = xdisplay.Display(xvfb_display)
    try:
        window = display.screen().root.create_window(0, 0, 1, 1, 0, X.CopyFromParent)
        window.change_property(display.get_atom("_NET_WM_PID"), Xatom.CARDINAL, 32, [4242])
        display.sync()
        assert _net_wm_pid(display, window) == 4242
        # Another host's pid means nothing here.
        window.change_property(Xatom.WM_CLIENT_MACHINE, Xatom.STRING, 8, b"elsewhere.example")
        display.sync()
        assert _net_wm_pid(display, window) is None
        window.change_property(Xatom.WM_CLIENT_MACHINE, Xatom.STRING, 8, socket.gethostname().encode())
        display.sync()
        assert _net_wm_pid(display, window) == 4242
    finally:
        display.close()


def test_socket_diagnostics_pair_peers_and_find_holders() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    try:
        a, b = os.fstat(left.fileno()).st_ino, os.fstat(right.fileno()).st_ino
        sockets = unix_sockets()
        assert sockets[a][1] == b and sockets[b][1] == a
        assert socket_holders({a}) == {os.getpid()}
        assert socket_holders(set()) == set()
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize("notified", [True, False], ids=["xfixes", "polling"])
def test_the_source_puts_the_owner_in_the_work(xvfb_display: str, notified: bool) -> None:
    emitted: list[ClipboardWork] = []

    def take(work: Work) -> bool:
        assert isinstance(work, ClipboardWork)
        emitted.append(work)
        return True

    kwargs = {} if notified else {"watch": no_notifications}
    source = ClipboardSource(take, interval_s=0.05, **kwargs)  # type: ignore[arg-type]
    source.start()
    try:
        wait_for(lambda: source.reads >= 1 and source.notified == notified, message="baseline read")
        copy("attributed text")
        wait_for(lambda: emitted, message="a ClipboardWork")
        (live,) = xclip_owners(xvfb_display)
        process = emitted[0].process
        assert process is not None and process["pid"] == live.pid and process["exe"].endswith("/xclip")
    finally:
        source.stop()


def test_without_x_resource_the_owner_windows_net_wm_pid_is_used(display_without_xres: str) -> None:
    from Xlib import X, Xatom
    from Xlib import display as xdisplay

    copy("an owner that sets no _NET_WM_PID")
    assert owner_process("clipboard") is None  # xclip's window says nothing, and the server cannot
    display = xdisplay.Display(display_without_xres)
    try:
        assert not display.has_extension("X-Resource")
        window = display.screen().root.create_window(0, 0, 1, 1, 0, X.CopyFromParent)
        window.change_property(display.get_atom("_NET_WM_PID"), Xatom.CARDINAL, 32, [os.getpid()])
        window.set_selection_owner(display.get_atom("CLIPBOARD"), X.CurrentTime)
        display.sync()
        process = owner_process("clipboard")
        assert process is not None and process["pid"] == os.getpid() and process["exe"] == os.path.realpath(sys.executable)
    finally:
        display.close()
