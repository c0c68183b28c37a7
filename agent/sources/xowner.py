"""Who owns an X selection: the owner window's client process, as the X server knows it.

The X server learns each local client's pid from the kernel when it connects (SO_PEERCRED) and
tells it through the X-Resource extension; that is the server's word, which a client cannot
forge, so it is asked first. ``_NET_WM_PID`` is the client's own claim on its window and is
used only where X-Resource (1.2) is missing; many owners (xclip, toolkits' hidden clipboard windows)
never set it anyway. A remote client has no pid the server can tell: the owner is then unknown.

Command-line copy tools (xclip, xsel) connect, take the selection, then fork and let the parent
exit, so the pid the server recorded is gone while its child holds the connection. The child is
found through the kernel's socket diagnostics: the X server's accepted sockets, their peers, and
which process holds a peer; the orphan among those clients whose pid is nearest above the dead
one is the forked owner.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from typing import Any

from agent.procinfo import writer

_ATOMS = {"clipboard": "CLIPBOARD", "primary": "PRIMARY"}
_LOCAL_CLIENT_PID_MASK = 1 << 1  # X-Resource's LocalClientPIDMask
_UNASKED = object()

# Netlink sock_diag (linux/sock_diag.h, linux/unix_diag.h).
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_UDIAG_SHOW_NAME = 1
_UDIAG_SHOW_PEER = 4
_UNIX_DIAG_NAME = 0
_UNIX_DIAG_PEER = 2
_NLMSG_HEADER = struct.Struct("=IHHII")
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")
_RTA_HEADER = struct.Struct("=HH")
MAX_DIAG_BYTES = 16 << 20
"""A bound on the socket dump read (a desktop has a few thousand sockets of ~50 bytes each)."""
MAX_PROCESSES = 100_000
_SOCKET_LINK = re.compile(r"socket:\[(\d+)\]")


def owner_process(selection: str, display_name: str | None = None) -> dict[str, Any] | None:
    """The event's ``process`` for whoever owns ``selection`` ("clipboard" or "primary") now, or None.

    None when python-xlib is missing, no display answers, nobody owns the selection, or the owner
    is a client the server cannot place (remote). Never raises: attribution is a nicety of an event.
    """
    pid = owner_pid(selection, display_name)
    return writer(pid) if pid is not None else None


def owner_pid(selection: str, display_name: str | None = None) -> int | None:
    """The pid of the local process that owns ``selection``, or None when the display cannot tell."""
    name = display_name if display_name is not None else os.environ.get("DISPLAY")
    if not name:
        return None
    try:
        from Xlib import X
        from Xlib import display as xdisplay
    except ImportError:
        return None
    try:
        display = xdisplay.Display(name)
    except Exception:  # noqa: BLE001 - python-xlib raises many types here, all meaning "no connection"
        return None
    try:
        window = display.get_selection_owner(display.get_atom(_ATOMS[selection]))
        if window is None or window == X.NONE or not getattr(window, "id", 0):
            return None
        pid = _client_pid(display, window.id)
        if pid is _UNASKED:
            # No X-Resource (or one before 1.2): only the window's own claim is left.
            return _net_wm_pid(display, window)
        if pid is None:
            return None  # the server knows its local clients' pids: this one is remote
        if os.path.exists(f"/proc/{pid}") or not os.path.isdir("/proc"):
            return pid
        return _forked_child(display, name, pid)
    except Exception:  # noqa: BLE001 - an X error (the owner went away meanwhile) means "unknown"
        return None
    finally:
        display.close()


def _client_pid(display: Any, xid: int) -> Any:
    """X-Resource's pid of the client that created resource ``xid``: None for a client without one
    (remote), ``_UNASKED`` where the server has no X-Resource 1.2 to ask."""
    if not display.has_extension("X-Resource"):
        return _UNASKED
    try:
        reply = display.res_query_client_ids([{"client": xid, "mask": _LOCAL_CLIENT_PID_MASK}])
    except Exception:  # noqa: BLE001 - an X-Resource before 1.2 refuses the request
        return _UNASKED
    for entry in reply.ids:
        if entry.spec.mask & _LOCAL_CLIENT_PID_MASK and entry.value:
            return int(entry.value[0])
    return None


def _all_client_pids(display: Any) -> set[int]:
    """The connect-time pids of every local client (X-Resource's "all clients" is client 0)."""
    reply = display.res_query_client_ids([{"client": 0, "mask": _LOCAL_CLIENT_PID_MASK}])
    return {int(entry.value[0]) for entry in reply.ids if entry.value}


def _net_wm_pid(display: Any, window: Any) -> int | None:
    """The owner window's ``_NET_WM_PID``, when the window says it runs on this host."""
    from Xlib import X, Xatom

    machine = window.get_full_property(Xatom.WM_CLIENT_MACHINE, X.AnyPropertyType)
    # Host names compared by their first label: no DNS look-up (getfqdn) on the way to an event.
    if machine is not None and _text(machine.value).split(".")[0] != socket.gethostname().split(".")[0]:
        return None
    prop = window.get_full_property(display.get_atom("_NET_WM_PID"), Xatom.CARDINAL)
    if prop is None or len(prop.value) != 1:
        return None
    pid = int(prop.value[0])
    return pid if pid > 0 else None


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _forked_child(display: Any, display_name: str, dead_pid: int) -> int | None:
    """The live process holding a connection that ``dead_pid`` opened and then left to a forked child.

    Candidates are processes holding the client end of a connection to this display's socket
    whose own pid no client connected under; a fork's child gets the next free pid, so the one
    nearest above ``dead_pid`` is taken. None when there is none (or no socket diagnostics).
    """
    host, _, rest = display_name.rpartition(":")
    number = rest.partition(".")[0]
    if host not in ("", "unix") or not number.isdigit():
        return None
    path = f"/tmp/.X11-unix/X{number}".encode()
    try:
        sockets = unix_sockets()
    except OSError:
        return None
    client_ends = {peer for name, peer in sockets.values() if peer and name.strip(b"\0") == path}
    holders = socket_holders(client_ends)
    known = _all_client_pids(display)
    orphans = sorted(pid for pid in holders if pid not in known and pid > dead_pid)
    return orphans[0] if orphans else None


def unix_sockets() -> dict[int, tuple[bytes, int | None]]:
    """Every Unix socket of this network namespace: inode -> (bound name, peer inode), from sock_diag.

    An accepted socket carries its listener's name, so a server's connections are the sockets
    named after its listening path, and their peers are the clients' ends.

    Raises:
        OSError: no netlink sock_diag here (not Linux, or the unix_diag module is missing).
    """
    request = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, _UDIAG_SHOW_NAME | _UDIAG_SHOW_PEER, 0xFFFFFFFF, 0xFFFFFFFF)
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0)
    found: dict[int, tuple[bytes, int | None]] = {}
    received = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(2.0)
        sock.sendto(header + request, (0, 0))
        while received < MAX_DIAG_BYTES:
            data = sock.recv(1 << 16)
            received += len(data)
            if _parse_dump(data, found):
                return found
    raise OSError("the socket dump is larger than expected")


def _parse_dump(data: bytes, found: dict[int, tuple[bytes, int | None]]) -> bool:
    """Add the sockets of one netlink datagram to ``found``; True at the dump's end."""
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
        if kind == _NLMSG_DONE:
            return True
        if kind == _NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, offset + _NLMSG_HEADER.size)
            raise OSError(-code, "sock_diag refused the Unix socket dump")
        if length < _NLMSG_HEADER.size + _UNIX_DIAG_MSG.size:
            raise OSError("a malformed sock_diag message")
        inode = _UNIX_DIAG_MSG.unpack_from(data, offset + _NLMSG_HEADER.size)[4]
        name, peer = b"", None
        attr = offset + _NLMSG_HEADER.size + _UNIX_DIAG_MSG.size
        end = offset + length
        while attr + _RTA_HEADER.size <= end:
            size, kind = _RTA_HEADER.unpack_from(data, attr)
            if size < _RTA_HEADER.size:
                break
            value = data[attr + _RTA_HEADER.size : attr + size]
            if kind == _UNIX_DIAG_NAME:
                name = value
            elif kind == _UNIX_DIAG_PEER and len(value) == 4:
                (peer,) = struct.unpack("=I", value)
            attr += (size + 3) & ~3
        found[inode] = (name, peer)
        offset += (length + 3) & ~3
    return False


def socket_holders(inodes: set[int], *, proc: str = "/proc") -> set[int]:
    """The pids of processes with a descriptor on one of the sockets ``inodes``."""
    holders: set[int] = set()
    if not inodes:
        return holders
    for entry in os.listdir(proc)[:MAX_PROCESSES]:
        if not entry.isdigit():
            continue
        fd_dir = os.path.join(proc, entry, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # exited, or a kernel thread
        for fd in fds:
            try:
                match = _SOCKET_LINK.fullmatch(os.readlink(os.path.join(fd_dir, fd)))
            except OSError:
                continue
            if match and int(match.group(1)) in inodes:
                holders.add(int(entry))
                break
    return holders
