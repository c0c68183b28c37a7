"""Where data goes: a destination parsed from a git or upload URL, and the allowed-remotes patterns.

The agent and the collector must agree on whether a destination is allowed, so both call
``remote_allowed`` here (the collector imports this module). URLs come from the command lines of
programs the agent saw start, so every input is hostile: parsing is linear, bounded, and refuses
what it cannot read rather than guessing (``ValueError``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

MAX_URL = 8192
MAX_PATTERN = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,31})://")
_HELPER = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,31})::(.*)$", re.DOTALL)
_SCP = re.compile(r"^(?:([^/@\[]*)@)?(\[[^\]/]*\]|[^/:@\[]+):(.*)$", re.DOTALL)
_TRANSPORT_OF_SCHEME = {
    "ssh": "ssh", "git+ssh": "ssh", "ssh+git": "ssh", "git": "git", "http": "http", "https": "https",
    "ftp": "ftp", "ftps": "ftps", "file": "file", "rsync": "rsync", "sftp": "sftp", "scp": "scp",
}  # fmt: skip
DEFAULT_PORTS = {"ssh": 22, "sftp": 22, "scp": 22, "https": 443, "http": 80, "git": 9418, "rsync": 873, "ftp": 21, "ftps": 990}
"""A pattern with a port matches a destination without one on the transport's default port."""


@dataclasses.dataclass(frozen=True)
class Destination:
    """Where an egress went (agent/events.py DESTINATION_FIELDS). ``host`` is None for local and
    file transports, whose ``path`` is then the absolute local path; ``url`` carries no credentials."""

    tool: str
    transport: str
    host: str | None
    port: int | None
    path: str | None
    url: str
    remote: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def strip_credentials(url: str) -> str:
    """The URL without user name, password, query string or fragment (tokens travel in all of them).

    Never raises: applied to anything a command line held. ``helper::address`` keeps its helper.
    """
    helper = _HELPER.match(url)
    if helper and "/" not in helper.group(1):
        address = helper.group(2)
        if helper.group(1).lower() in _TRANSPORT_OF_SCHEME and not _SCHEME.match(address):
            return _strip(f"{helper.group(1)}://{address}")
        return f"{helper.group(1)}::{_strip(address)}"
    return _strip(url)


def _strip(url: str) -> str:
    scheme = _SCHEME.match(url)
    if scheme:
        rest = url[scheme.end() :]
        cut = len(rest)
        for stop in "/?#":
            at = rest.find(stop)
            if at != -1:
                cut = min(cut, at)
        authority, tail = rest[:cut], rest[cut:]
        authority = authority.rpartition("@")[2]
        tail = tail.split("#", 1)[0].split("?", 1)[0]
        return f"{scheme.group(1)}://{authority}{tail}"
    scp = _split_scp(url)
    return url[scp[0] :] if scp is not None else url


def parse_git_url(url: str, *, cwd: str | None = None, remote: str | None = None) -> Destination:
    """A git remote's URL (or local path) as a Destination with tool ``git``.

    Reads ``scheme://[user[:password]@]host[:port]/path`` (ssh, git, http(s), ftp(s), file),
    scp-like ``[user@]host:path`` and ``[user@][::1]:path``, ``helper::address`` and local paths
    (relative ones resolved against ``cwd``, without touching the disk).

    Raises:
        ValueError: empty, too long, control characters, a bad port or host.
    """
    return parse_url(url, tool="git", cwd=cwd, remote=remote, scp_like=True)


def parse_url(
    url: str,
    *,
    tool: str,
    cwd: str | None = None,
    remote: str | None = None,
    scp_like: bool = False,
    default_scheme: str | None = None,
    helpers: bool = True,
) -> Destination:
    """Any tool's destination URL; ``scp_like`` reads ``host:path`` the way git and scp do,
    ``default_scheme`` (curl, wget) applies to a URL without one, ``helpers`` reads git's
    ``helper::address`` (one level, as git does).

    Raises:
        ValueError: as ``parse_git_url``.
    """
    if not url:
        raise ValueError("empty URL")
    if len(url) > MAX_URL:
        raise ValueError(f"URL longer than {MAX_URL} characters")
    if _CONTROL.search(url):
        raise ValueError("control character in URL")
    helper = _HELPER.match(url) if helpers else None if helpers else None
    if helper and "/" not in helper.group(1):
        address = helper.group(2)
        if helper.group(1).lower() in _TRANSPORT_OF_SCHEME and not _SCHEME.match(address):
            return parse_url(f"{helper.group(1)}://{address}", tool=tool, cwd=cwd, remote=remote, helpers=False)
        inner = parse_url(address, tool=tool, cwd=cwd, remote=remote, scp_like=scp_like, default_scheme=default_scheme, helpers=False)
        name = helper.group(1).lower()
        transport = _TRANSPORT_OF_SCHEME.get(name, name)
        return dataclasses.replace(inner, transport=transport, url=strip_credentials(url))
    scheme = _SCHEME.match(url)
    if scheme is None and default_scheme is not None:
        return parse_url(f"{default_scheme}://{url}", tool=tool, cwd=cwd, remote=remote, helpers=False)
    if scheme:
        return _parse_scheme_url(url, scheme.group(1).lower(), scheme.end(), tool=tool, cwd=cwd, remote=remote)
    if scp_like:
        scp = _split_scp(url)
        if scp is not None:
            _, host, path = scp
            return Destination(tool, "ssh", _host(host), None, path, strip_credentials(url), remote)
    path = _local(url, cwd)
    return Destination(tool, "local", None, None, path, path, remote)


def _parse_scheme_url(url: str, scheme: str, start: int, *, tool: str, cwd: str | None, remote: str | None) -> Destination:
    transport = _TRANSPORT_OF_SCHEME.get(scheme, scheme)
    rest = url[start:]
    if transport == "file":
        path = rest.split("?", 1)[0].split("#", 1)[0]
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        return Destination(tool, "file", None, None, _local(path or "/", cwd), strip_credentials(url), remote)
    cut = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if at != -1:
            cut = min(cut, at)
    authority, path = rest[:cut], rest[cut:].split("#", 1)[0].split("?", 1)[0]
    hostport = authority.rpartition("@")[2]
    host, port = _split_port(hostport)
    if transport in ("ssh", "git") and path.startswith("/~"):
        path = path[1:]  # git reads ssh://host/~user/repo as a path relative to ~user
    return Destination(tool, transport, _host(host), port, path or None, strip_credentials(url), remote)


def _split_scp(url: str) -> tuple[int, str, str] | None:
    """``[user@]host:path`` as (where the host starts, host, path), or None when git would read a
    local path: no colon, or a slash before the first colon."""
    match = _SCP.match(url)
    if match is None:
        return None
    return match.start(2), match.group(2), match.group(3)


def _split_port(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            raise ValueError("unclosed [ in host")
        host, rest = hostport[: close + 1], hostport[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("text after ] in host")
        return host, _port(rest[1:]) if rest else None
    host, colon, port = hostport.partition(":")
    return host, _port(port) if colon else None


def _port(text: str) -> int | None:
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise ValueError(f"bad port {text[:16]!r}")
    return int(text)


def _host(host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or len(host) > 255 or "/" in host or "@" in host or " " in host:
        raise ValueError("bad or missing host")
    return host.lower()


def _local(path: str, cwd: str | None) -> str:
    if cwd is not None and not path.startswith("/"):
        path = os.path.join(cwd, path)
    return posixpath.normpath(path) if path.startswith("/") else path


def validate_pattern(p: str) -> str:
    """An allowed-remotes pattern, normalised (host lower-cased, trailing ``/`` and ``.git`` removed).

    ``host[:port]/path-glob`` (``*`` within a path part or host, ``**`` across parts) or
    ``/abs/path-glob`` for local and file remotes.

    Raises:
        ValueError: saying what is wrong with it.
    """
    if not isinstance(p, str) or not p:
        raise ValueError("empty pattern")
    if len(p) > MAX_PATTERN:
        raise ValueError(f"pattern longer than {MAX_PATTERN} characters")
    if _CONTROL.search(p):
        raise ValueError("control character in pattern")
    if any(c.isspace() for c in p):
        raise ValueError(f"whitespace in pattern {p!r}")
    if "://" in p:
        raise ValueError(f"pattern {p!r}: write host[:port]/path without a scheme")
    if p.startswith("/"):
        return _trim_path(posixpath.normpath(p) if "//" in p or "/./" in p else p)
    slash = p.find("/")
    if slash == -1:
        raise ValueError(f"pattern {p!r} has no path part: write {p}/** for every repository on that host")
    hostport, path = p[:slash], p[slash + 1 :]
    try:
        host, port = _split_port(hostport)
    except ValueError as exc:
        raise ValueError(f"pattern {p!r}: {exc}") from None
    if not host or "@" in host or "[" in host.strip("[]") or "]" in host.strip("[]"):
        raise ValueError(f"pattern {p!r}: bad host")
    path = re.sub(r"/{2,}", "/", path)
    return f"{host.lower()}{'' if port is None else f':{port}'}/{_trim_path(path)}"


def _trim_path(path: str) -> str:
    while len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    if path.endswith(".git") and not path.endswith("*.git"):
        path = path[: -len(".git")]
    return path


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> tuple[re.Pattern[str] | None, int | None, re.Pattern[str]] | None:
    """(host regex or None for local, port, path regex) of a pattern; None when it is invalid."""
    try:
        normal = validate_pattern(pattern)
    except ValueError:
        return None
    if normal.startswith("/"):
        return None, None, _glob(normal.lstrip("/"))
    hostport, _, path = normal.partition("/")
    host, port = _split_port(hostport)
    host_re = re.compile("".join("[^/:]*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", host.strip("[]"))))
    return host_re, port, _glob(path)


def _glob(path: str) -> re.Pattern[str]:
    """``**`` across path parts, ``*`` within one; a trailing ``/**`` also matches the folder itself."""
    tail = ""
    if path.endswith("/**"):
        path, tail = path[:-3], "(?:/.*)?"
    parts = []
    for piece in re.split(r"(\*\*|\*)", path):
        parts.append(".*" if piece == "**" else "[^/]*" if piece == "*" else re.escape(piece))
    return re.compile("".join(parts) + tail)


def _path_forms(path: str, local: bool) -> list[str]:
    path = posixpath.normpath(path) if local and path.startswith("/") else re.sub(r"/{2,}", "/", path)
    path = path.lstrip("/")
    stripped = path.rstrip("/")
    forms = [path, stripped]
    if stripped.endswith(".git"):
        forms.append(stripped[: -len(".git")])
    return forms


def remote_allowed(destination: Mapping[str, Any], patterns: Iterable[str]) -> str | None:
    """The first pattern that allows this destination (a ``Destination.to_dict()``), or None.

    Host compare is case-insensitive; a pattern without a port matches any port; the path is
    compared with and without a trailing ``/`` and ``.git``. Invalid patterns never match.
    """
    host = destination.get("host")
    path = destination.get("path")
    if path is None:
        path = ""  # https://host with no path: the host's root
    if not isinstance(path, str) or len(path) > MAX_URL:
        return None
    port = destination.get("port")
    if not isinstance(port, int) or isinstance(port, bool):
        port = DEFAULT_PORTS.get(str(destination.get("transport")))
    local = host is None
    if not local and (not isinstance(host, str) or len(host) > 255):
        return None
    forms = _path_forms(path, local)
    for pattern in patterns:
        if not isinstance(pattern, str):
            continue
        compiled = _compiled(pattern)
        if compiled is None:
            continue
        host_re, want_port, path_re = compiled
        if (host_re is None) != local:
            continue
        if host_re is not None and (not isinstance(host, str) or not host_re.fullmatch(host.lower())):
            continue
        if want_port is not None and want_port != port:
            continue
        if any(path_re.fullmatch(form) for form in forms):
            return pattern
    return None
