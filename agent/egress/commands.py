"""What a started git program is about to do: pushes, remotes, clones and push transports read from argv.

Pure functions on a process's argv and working folder (the process source reads them from /proc),
so every argument is hostile: each function is bounded (agent/egress/argv.py) and returns None rather
than raising on anything it cannot read. Upload tools are read by agent/egress/uploads.py.

Two views of a push exist on purpose. ``git push`` names a remote the repository's config resolves,
which ``-c`` or ``insteadOf`` can rewrite; the process that carries the data (``git-remote-https``,
``ssh host git-receive-pack``, a local ``git-receive-pack``) names where it really goes:
``push_transport`` reads those, in the forms git 2.39 runs them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from agent.egress.argv import Options, base, join, split_command, usable
from agent.egress.remotes import Destination, parse_git_url

MAX_REFS = 100
MAX_REF_CHARS = 1024


@dataclasses.dataclass(frozen=True)
class GitInvocation:
    """A git command line after git's own options: ``cwd`` is where git works (after ``-C``)."""

    subcommand: str
    args: tuple[str, ...]
    cwd: str | None
    git_dir: str | None = None
    work_tree: str | None = None
    config: tuple[str, ...] = ()
    """The ``-c name=value`` settings, as given (they can re-point a remote for one command)."""


@dataclasses.dataclass(frozen=True)
class PushIntent:
    """What ``git push`` named: the remote (name or URL; None = the branch's default), refspecs, flags."""

    remote: str | None
    refspecs: tuple[str, ...]
    flags: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RemoteChange:
    """A remote added or re-pointed (``git remote add|set-url``, ``git config remote.<n>.url``)."""

    action: str
    name: str
    url: str


@dataclasses.dataclass(frozen=True)
class CloneIntent:
    """``git clone``: the source as written and the absolute folder the copy goes to."""

    source: str
    target: str


@dataclasses.dataclass(frozen=True)
class TransportStart:
    """A process carrying a push: ``remote-helper`` (http(s), ftp, other helpers; fetches too) or
    ``receive-pack`` (ssh, or a local/file repository)."""

    kind: str
    destination: Destination


_GIT_VALUE_OPTIONS = {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--super-prefix", "--config-env"}
_GIT_FLAGS = {
    "-p", "-P", "--paginate", "--no-pager", "--bare", "--no-replace-objects", "--literal-pathspecs", "--glob-pathspecs",
    "--noglob-pathspecs", "--icase-pathspecs", "--no-optional-locks", "--no-lazy-fetch",
}  # fmt: skip


def git_invocation(argv: Sequence[str], cwd: str | None) -> GitInvocation | None:
    """A git command line (``git [global options] sub args`` or the dashed ``git-sub args``), or None
    (not git, or git only printing something: ``--version``, ``--exec-path``, unknown options)."""
    if not usable(argv):
        return None
    name = base(argv[0])
    if name.startswith("git-") and len(name) > 4:
        return GitInvocation(name[4:], tuple(argv[1:]), cwd)
    if name != "git":
        return None
    git_dir = work_tree = None
    config: list[str] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            return GitInvocation(arg, tuple(argv[i + 1 :]), cwd, git_dir, work_tree, tuple(config))
        option, eq, value = arg.partition("=")
        if option in _GIT_VALUE_OPTIONS and not eq:
            if i + 1 >= len(argv):
                return None
            value = argv[i + 1]
            i += 2
        elif option in _GIT_VALUE_OPTIONS or (option == "--exec-path" and eq) or arg in _GIT_FLAGS:
            i += 1
        else:
            return None
        if option == "-C":
            if value:  # git ignores -C ""
                cwd = join(cwd, value)
        elif option == "-c":
            config.append(value)
        elif option == "--git-dir":
            git_dir = join(cwd, value)
        elif option == "--work-tree":
            work_tree = join(cwd, value)
        elif arg == "--bare":
            git_dir = cwd
    return None


_PUSH = Options(
    "o",
    {"repo", "receive-pack", "exec", "push-option", "recurse-submodules"},
    {
        "all", "branches", "mirror", "tags", "delete", "force", "dry-run", "prune", "follow-tags", "force-with-lease", "force-if-includes",
        "atomic", "no-atomic", "signed", "no-signed", "set-upstream", "quiet", "verbose", "progress", "porcelain", "thin", "no-thin", "verify",
        "no-verify", "ipv4", "ipv6", "no-recurse-submodules", "no-force-with-lease", "no-follow-tags", "no-progress",
    },
    prefixes=True,
)  # fmt: skip
_PUSH_FLAGS = {
    "--all": "--all", "--branches": "--branches", "--mirror": "--mirror", "--tags": "--tags", "--delete": "--delete", "-d": "--delete",
    "--force": "--force", "-f": "--force", "--dry-run": "--dry-run", "-n": "--dry-run", "--prune": "--prune", "--follow-tags": "--follow-tags",
    "--force-with-lease": "--force-with-lease", "--atomic": "--atomic", "--set-upstream": "--set-upstream", "-u": "--set-upstream",
}  # fmt: skip


def push_intent(inv: GitInvocation) -> PushIntent | None:
    """What a ``git push`` names; None for any other subcommand."""
    if inv.subcommand != "push":
        return None
    options, positionals = _PUSH.scan(inv.args)
    remote = None
    flags: list[str] = []
    for name, value in options:
        if name in ("--repo",) and value is not None:
            remote = value
        flag = _PUSH_FLAGS.get(name)
        if flag is not None and flag not in flags:
            flags.append(flag)
    if positionals:
        remote = positionals[0]
    refspecs = tuple(ref[:MAX_REF_CHARS] for ref in positionals[1 : 1 + MAX_REFS])
    return PushIntent(remote, refspecs, tuple(flags))


_REMOTE_ADD = Options("tm", {"track", "master"}, {"fetch", "tags", "no-tags", "mirror"}, prefixes=True)
_SET_URL = Options("", (), {"push", "add", "delete"}, prefixes=True)
_CONFIG = Options("f", {"file", "blob", "type", "default", "comment"}, ())
_CONFIG_REMOTE_KEY = re.compile(r"^remote\.(.+)\.(url|pushurl)$", re.IGNORECASE | re.DOTALL)


def remote_change(inv: GitInvocation) -> RemoteChange | None:
    """A new or changed remote URL: ``git remote add|set-url`` or ``git config remote.<name>.(push)url``."""
    if inv.subcommand == "config":
        return _config_remote(inv)
    if inv.subcommand != "remote":
        return None
    args = list(inv.args)
    while args and args[0] in ("-v", "--verbose"):
        args.pop(0)
    if not args:
        return None
    action, rest = args[0], args[1:]
    if action == "add":
        _, positionals = _REMOTE_ADD.scan(rest)
        if len(positionals) == 2:
            return RemoteChange("add", positionals[0], positionals[1])
    elif action == "set-url":
        options, positionals = _SET_URL.scan(rest)
        if any(name == "--delete" for name, _ in options):
            return None
        if len(positionals) in (2, 3):
            return RemoteChange("set-url", positionals[0], positionals[1])
    return None


def _config_remote(inv: GitInvocation) -> RemoteChange | None:
    options, positionals = _CONFIG.scan(inv.args)
    names = {name for name, _ in options}
    if names & {"--global", "--system", "--file", "-f", "--blob", "--unset", "--unset-all", "--get", "--get-all", "--list", "-l", "--remove-section"}:
        return None
    if len(positionals) not in (2, 3):
        return None
    key = _CONFIG_REMOTE_KEY.match(positionals[0])
    if key is None:
        return None
    return RemoteChange("set-url", key.group(1), positionals[1])


_CLONE = Options(
    "obucj",
    {
        "origin", "branch", "upload-pack", "reference", "reference-if-able", "separate-git-dir", "depth", "shallow-since", "shallow-exclude",
        "template", "config", "jobs", "filter", "server-option", "bundle-uri",
    },
    {
        "local", "no-local", "no-hardlinks", "shared", "dissociate", "quiet", "verbose", "progress", "no-checkout", "bare", "mirror",
        "single-branch", "no-single-branch", "no-tags", "shallow-submodules", "no-shallow-submodules", "remote-submodules", "sparse",
        "reject-shallow", "no-reject-shallow", "recurse-submodules", "recursive", "ipv4", "ipv6",
    },
    prefixes=True,
)  # fmt: skip


def clone_intent(inv: GitInvocation) -> CloneIntent | None:
    """``git clone``: the source and the absolute target (git's default name when none is given)."""
    if inv.subcommand != "clone":
        return None
    options, positionals = _CLONE.scan(inv.args)
    if not positionals or len(positionals) > 2:
        return None
    source = positionals[0]
    bare = any(name in ("--bare", "--mirror") for name, _ in options)
    name = positionals[1] if len(positionals) == 2 else _clone_name(source, bare)
    if not name:
        return None
    target = join(inv.cwd, name)
    return CloneIntent(source, target) if target is not None else None


def _clone_name(source: str, bare: bool) -> str:
    """The folder git makes for a clone without a target: the source's last part without ``.git``."""
    name = source.rstrip("/")
    if name.endswith("/.git"):
        name = name[: -len("/.git")]
    name = name.rstrip("/")
    name = re.split(r"[/:]", name)[-1]
    for suffix in (".git", ".bundle"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name in ("", ".", ".."):
        return ""
    return name + ".git" if bare else name


_INTERPRETERS = {"sh", "bash", "dash", "python3", "python", "perl"}
_SSH = Options("BbcDEeFIiJLlmOopQRSWw", ())


def push_transport(argv: Sequence[str], cwd: str | None) -> TransportStart | None:
    """A process carrying a push, in the forms git 2.39 starts them, or None (fetches, anything else):

    - ``git-remote-https <remote> <url>`` (git runs ``git remote-https``, which execs this);
    - ``ssh [options] [user@]host "git-receive-pack '<path>'"``;
    - ``git-receive-pack <path>`` and the ``/bin/sh -c "git-receive-pack '<path>'" ...`` git runs for
      local and file:// pushes (both appear: the shell forks the receive-pack);
    - any of these run as a script through its interpreter (``/bin/sh /usr/local/bin/ssh host ...``:
      a wrapper script named ssh shows in /proc with the shell first).
    """
    if not usable(argv):
        return None
    if base(argv[0]) in _INTERPRETERS and len(argv) > 1 and not argv[1].startswith("-"):
        argv = argv[1:]
    name = base(argv[0])
    try:
        if name.startswith("git-remote-"):
            return _remote_helper(name[len("git-remote-") :], argv)
        if name == "ssh":
            return _ssh_receive_pack(argv, cwd)
        if name in ("sh", "bash", "dash") and len(argv) >= 3 and argv[1] == "-c":
            words = split_command(argv[2])
            return _local_receive_pack(words, cwd) if words else None
        return _local_receive_pack(list(argv), cwd)
    except ValueError:
        return None


def _remote_helper(scheme: str, argv: Sequence[str]) -> TransportStart | None:
    if scheme in ("ext", "fd") or len(argv) < 2 or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9+.-]{0,31}", scheme):
        return None
    url = argv[2] if len(argv) >= 3 else argv[1]
    remote = argv[1] if argv[1] != url else None
    if scheme.lower() in ("http", "https", "ftp", "ftps"):
        destination = parse_git_url(url, remote=remote)
    else:
        destination = parse_git_url(f"{scheme}::{url}", remote=remote)
    return TransportStart("remote-helper", destination)


def _receive_pack_path(words: Sequence[str]) -> str | None:
    """The repository a ``git-receive-pack <path>`` or ``git receive-pack <path>`` command names."""
    if not words:
        return None
    first = base(words[0])
    if first == "git-receive-pack":
        args = words[1:]
    elif first == "git" and len(words) > 1 and words[1] == "receive-pack":
        args = words[2:]
    else:
        return None
    if any(arg in ("--stateless-rpc", "--advertise-refs", "--http-backend-info-refs") for arg in args):
        return None  # the server side of a smart-http push (git http-backend), not a push from here
    paths = [arg for arg in args if not arg.startswith("-")]
    return paths[0] if len(paths) == 1 else None


def _local_receive_pack(words: list[str], cwd: str | None) -> TransportStart | None:
    path = _receive_pack_path(words)
    if path is None:
        return None
    local = join(cwd, path)
    if local is None:
        return None
    return TransportStart("receive-pack", Destination("git", "local", None, None, local, local))


def _ssh_receive_pack(argv: Sequence[str], cwd: str | None) -> TransportStart | None:
    options, positionals = _SSH.scan(argv[1:])
    port = None
    for name, value in options:
        if value is None:
            if name == "-G":
                return None  # git's probe for the ssh variant: no connection
            continue
        if name == "-p":
            port = value
        elif name == "-o":
            key, _, setting = value.replace("=", " ", 1).partition(" ")
            if key.lower() == "port":
                port = setting.strip()
    if len(positionals) < 2:
        return None
    target, command = positionals[0], " ".join(positionals[1:])
    path = _receive_pack_path(split_command(command))
    if path is None:
        return None
    if target.startswith("ssh://"):
        parsed = parse_git_url(target)
        host, url_port = parsed.host, parsed.port
    else:
        host, url_port = target.rpartition("@")[2], None
    shown = f"[{host}]" if host and ":" in host else host
    port_text = port if port is not None else (str(url_port) if url_port is not None else None)
    url = f"ssh://{shown}{':' + port_text if port_text else ''}/{path.lstrip('/')}" if path.startswith("/") or port_text else f"{shown}:{path}"
    destination = parse_git_url(url)
    return TransportStart("receive-pack", destination)
