"""What a started program is about to send: git pushes, remotes, clones and upload tools read from argv.

Pure functions on a process's argv and working folder (the process source reads them from /proc),
so every argument is hostile: each function is bounded (argv beyond MAX_ARGS or MAX_ARGV_BYTES is
not read at all) and returns None rather than raising on anything it cannot read. The only I/O is
reading an sftp batch file, at most MAX_BATCH bytes.

Two views of a push exist on purpose. ``git push`` names a remote the repository's config resolves,
which ``-c`` or ``insteadOf`` can rewrite; the process that carries the data (``git-remote-https``,
``ssh host git-receive-pack``, a local ``git-receive-pack``) names where it really goes:
``push_transport`` reads those, in the forms git 2.39 runs them.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import shlex
from collections.abc import Collection, Sequence

from agent.egress.remotes import Destination, parse_git_url, parse_url

MAX_ARGS = 4096
MAX_ARGV_BYTES = 256 << 10
MAX_BATCH = 64 << 10
MAX_REFS = 100
MAX_REF_CHARS = 1024
MAX_COMMAND = 64 << 10
"""Longest shell command string (``sh -c``, ssh's remote command) split with shlex."""


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


@dataclasses.dataclass(frozen=True)
class UploadIntent:
    """Local files (absolute) an upload tool names and where they go."""

    tool: str
    files: tuple[str, ...]
    destination: Destination


def _usable(argv: Sequence[str]) -> bool:
    if not argv or len(argv) > MAX_ARGS:
        return False
    total = 0
    for arg in argv:
        if not isinstance(arg, str):
            return False
        total += len(arg)
        if total > MAX_ARGV_BYTES:
            return False
    return True


def _base(arg0: str) -> str:
    return arg0.rpartition("/")[2]


def _join(cwd: str | None, path: str) -> str | None:
    """``path`` made absolute against ``cwd`` (None when that is impossible or the path is unusable)."""
    if not path or "\x00" in path:
        return None
    if not path.startswith("/"):
        if cwd is None or not cwd.startswith("/"):
            return None
        path = os.path.join(cwd, path)
    return posixpath.normpath(path)


class _Options:
    """A command's options: which take a value (short letters, long names); the rest are flags.

    Long options may be abbreviated to a unique prefix (git's parse-options allows it)."""

    def __init__(self, short_values: str, long_values: Collection[str], long_flags: Collection[str] = (), *, prefixes: bool = False) -> None:
        self.short_values = frozenset(short_values)
        self.long_values = frozenset(long_values)
        self.long_names = tuple(sorted(self.long_values | frozenset(long_flags)))
        self.prefixes = prefixes

    def long_takes_value(self, name: str) -> bool:
        if name in self.long_values:
            return True
        if not self.prefixes or name in self.long_names:
            return False
        matches = [known for known in self.long_names if known.startswith(name)]
        return len(matches) == 1 and matches[0] in self.long_values

    def scan(self, args: Sequence[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
        """(options as (name, value), positionals); ``--`` ends options. Short bundles are split:
        ``-fu`` is ``-f -u``, ``-ovalue`` and ``-o value`` both give ``-o`` its value."""
        options: list[tuple[str, str | None]] = []
        positionals: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                positionals.extend(args[i:])
                break
            if arg.startswith("--"):
                name, eq, value = arg.partition("=")
                if eq:
                    options.append((name, value))
                elif self.long_takes_value(name[2:]) and i < len(args):
                    options.append((name, args[i]))
                    i += 1
                else:
                    options.append((name, None))
            elif arg.startswith("-") and len(arg) > 1:
                for at in range(1, len(arg)):
                    letter = arg[at]
                    if letter in self.short_values:
                        rest = arg[at + 1 :]
                        if rest:
                            options.append(("-" + letter, rest))
                        elif i < len(args):
                            options.append(("-" + letter, args[i]))
                            i += 1
                        else:
                            options.append(("-" + letter, None))
                        break
                    options.append(("-" + letter, None))
            else:
                positionals.append(arg)
        return options, positionals


_GIT_VALUE_OPTIONS = {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--super-prefix", "--config-env"}
_GIT_FLAGS = {
    "-p", "-P", "--paginate", "--no-pager", "--bare", "--no-replace-objects", "--literal-pathspecs", "--glob-pathspecs",
    "--noglob-pathspecs", "--icase-pathspecs", "--no-optional-locks", "--no-lazy-fetch",
}  # fmt: skip


def git_invocation(argv: Sequence[str], cwd: str | None) -> GitInvocation | None:
    """A git command line (``git [global options] sub args`` or the dashed ``git-sub args``), or None
    (not git, or git only printing something: ``--version``, ``--exec-path``, unknown options)."""
    if not _usable(argv):
        return None
    name = _base(argv[0])
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
                cwd = _join(cwd, value)
        elif option == "-c":
            config.append(value)
        elif option == "--git-dir":
            git_dir = _join(cwd, value)
        elif option == "--work-tree":
            work_tree = _join(cwd, value)
        elif arg == "--bare":
            git_dir = cwd
    return None


_PUSH = _Options(
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


_REMOTE_ADD = _Options("tm", {"track", "master"}, {"fetch", "tags", "no-tags", "mirror"}, prefixes=True)
_SET_URL = _Options("", (), {"push", "add", "delete"}, prefixes=True)
_CONFIG = _Options("f", {"file", "blob", "type", "default", "comment"}, ())
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


_CLONE = _Options(
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
    target = _join(inv.cwd, name)
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
_SSH = _Options("BbcDEeFIiJLlmOopQRSWw", ())


def push_transport(argv: Sequence[str], cwd: str | None) -> TransportStart | None:
    """A process carrying a push, in the forms git 2.39 starts them, or None (fetches, anything else):

    - ``git-remote-https <remote> <url>`` (git runs ``git remote-https``, which execs this);
    - ``ssh [options] [user@]host "git-receive-pack '<path>'"``;
    - ``git-receive-pack <path>`` and the ``/bin/sh -c "git-receive-pack '<path>'" ...`` git runs for
      local and file:// pushes (both appear: the shell forks the receive-pack);
    - any of these run as a script through its interpreter (``/bin/sh /usr/local/bin/ssh host ...``:
      a wrapper script named ssh shows in /proc with the shell first).
    """
    if not _usable(argv):
        return None
    if _base(argv[0]) in _INTERPRETERS and len(argv) > 1 and not argv[1].startswith("-"):
        argv = argv[1:]
    name = _base(argv[0])
    try:
        if name.startswith("git-remote-"):
            return _remote_helper(name[len("git-remote-") :], argv)
        if name == "ssh":
            return _ssh_receive_pack(argv, cwd)
        if name in ("sh", "bash", "dash") and len(argv) >= 3 and argv[1] == "-c":
            words = _split_command(argv[2])
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


def _split_command(command: str) -> list[str]:
    if len(command) > MAX_COMMAND:
        return []
    try:
        return shlex.split(command)
    except ValueError:
        return []


def _receive_pack_path(words: Sequence[str]) -> str | None:
    """The repository a ``git-receive-pack <path>`` or ``git receive-pack <path>`` command names."""
    if not words:
        return None
    first = _base(words[0])
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
    local = _join(cwd, path)
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
    path = _receive_pack_path(_split_command(command))
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


def upload_intent(argv: Sequence[str], cwd: str | None, *, tools: Collection[str]) -> UploadIntent | None:
    """The local files an upload tool sends and where, or None (downloads, local copies, no files named)."""
    if not _usable(argv):
        return None
    name = _base(argv[0])
    if name not in tools:
        return None
    reader = _READERS.get(name)
    if reader is None:
        return None
    try:
        intent = reader(argv[1:], cwd)
    except ValueError:
        return None
    if intent is None or not intent.files:
        return None
    return intent


def _remote_operand(arg: str) -> bool:
    """Whether scp, sftp and rsync read this operand as remote (``host:path``, a scheme URL)."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", arg) is not None or re.match(r"^(?:[^/@\[]*@)?(?:\[[^\]/]*\]|[^/:@\[]+):", arg) is not None


def _files(paths: Sequence[str], cwd: str | None) -> tuple[str, ...]:
    """The named files made absolute, each once, in order (``-`` is stdin, and dropped)."""
    found: dict[str, None] = {}
    for path in paths:
        if path != "-":
            full = _join(cwd, path)
            if full is not None:
                found[full] = None
    return tuple(found)


_SCP = _Options("cFiJloPSDX", ())


def _scp(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    options, operands = _SCP.scan(args)
    if any(name == "-3" for name, _ in options) or len(operands) < 2:
        return None
    target, sources = operands[-1], operands[:-1]
    if not _remote_operand(target) or any(_remote_operand(source) for source in sources):
        return None
    port = next((value for name, value in options if name == "-P" and value), None)
    destination = _scp_like("scp", "scp", target, port)
    return UploadIntent("scp", _files(sources, cwd), destination)


def _scp_like(tool: str, transport: str, target: str, port: str | None) -> Destination:
    if "://" in target:
        parsed = parse_url(target, tool=tool)
        return dataclasses.replace(parsed, transport=transport) if parsed.port is not None or port is None else _with_port(parsed, transport, port)
    parsed = parse_url(target, tool=tool, scp_like=True)
    if parsed.host is None:
        raise ValueError("not a remote operand")
    return _with_port(parsed, transport, port) if port else dataclasses.replace(parsed, transport=transport)


def _with_port(parsed: Destination, transport: str, port: str) -> Destination:
    if not port.isascii() or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        raise ValueError("bad port")
    return dataclasses.replace(parsed, transport=transport, port=int(port))


_SFTP = _Options("BbcDFiJloPRSsX", ())


def _sftp(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    options, operands = _SFTP.scan(args)
    if not operands:
        return None
    port = next((value for name, value in options if name == "-P" and value), None)
    batch = next((value for name, value in options if name == "-b" and value), None)
    target = operands[-1]
    if "://" not in target and ":" not in target:
        target += ":"
    destination = _scp_like("sftp", "sftp", target, port)
    if batch is None or batch == "-":
        return None
    return UploadIntent("sftp", _batch_puts(batch, cwd), destination)


def _batch_puts(batch: str, cwd: str | None) -> tuple[str, ...]:
    """The local files an sftp batch file's put/mput/reput lines send (``lcd`` followed)."""
    path = _join(cwd, batch)
    if path is None:
        return ()
    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_BATCH).decode("utf-8", "replace")
    except OSError:
        return ()
    local = cwd
    found: list[str] = []
    for line in text.splitlines():
        line = line.strip().lstrip("-@").strip()
        if not line or line.startswith("#"):
            continue
        words = _split_command(line)
        if not words:
            continue
        command, rest = words[0].lower(), [word for word in words[1:] if not word.startswith("-")]
        if command == "lcd" and rest:
            local = _join(local, rest[0])
        elif command in ("put", "mput", "reput") and rest:
            sources = rest if command == "mput" else rest[:1]
            found.extend(_files(sources, local))
    return tuple(dict.fromkeys(found))


_RSYNC = _Options(
    "efBTM@",
    {
        "rsh", "rsync-path", "exclude", "include", "exclude-from", "include-from", "files-from", "filter", "max-size", "min-size", "max-delete",
        "max-alloc", "partial-dir", "temp-dir", "compare-dest", "copy-dest", "link-dest", "suffix", "backup-dir", "chmod", "chown", "usermap",
        "groupmap", "timeout", "contimeout", "address", "port", "sockopts", "log-file", "log-file-format", "out-format", "password-file",
        "bwlimit", "stop-after", "stop-at", "write-batch", "only-write-batch", "read-batch", "protocol", "iconv", "checksum-choice",
        "compress-choice", "compress-level", "skip-compress", "outbuf", "info", "debug", "block-size", "remote-option", "modify-window",
        "checksum-seed", "early-input", "copy-as", "config", "dparam",
    },
)  # fmt: skip


def _rsync(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    options, operands = _RSYNC.scan(args)
    if len(operands) < 2:
        return None
    target, sources = operands[-1], operands[:-1]
    if any(_remote_operand(source) or "::" in source for source in sources):
        return None
    values = dict((name, value) for name, value in options if value is not None)
    if target.startswith("rsync://"):
        destination = parse_url(target, tool="rsync")
        if destination.port is None and values.get("--port"):
            destination = _with_port(destination, "rsync", values["--port"])
    elif re.match(r"^(?:[^/@\[]*@)?[^/:@\[]+::", target):
        host, _, module = target.partition("::")
        destination = parse_url(f"rsync://{host}/{module}", tool="rsync")
        if values.get("--port"):
            destination = _with_port(destination, "rsync", values["--port"])
    elif _remote_operand(target):
        rsh = values.get("-e") or values.get("--rsh") or ""
        words = _split_command(rsh)
        port = next((words[i + 1] for i in range(len(words) - 1) if words[i] == "-p"), None)
        destination = _scp_like("rsync", "ssh", target, port)
    else:
        return None
    return UploadIntent("rsync", _files(sources, cwd), destination)


_CURL = _Options(
    "EKCbcdDFPHhmoxUQreXYytzTuAw",
    {
        "abstract-unix-socket", "alt-svc", "aws-sigv4", "cacert", "capath", "cert", "cert-type", "ciphers", "config", "connect-timeout",
        "connect-to", "continue-at", "cookie", "cookie-jar", "create-file-mode", "crlfile", "curves", "data", "data-ascii", "data-binary",
        "data-raw", "data-urlencode", "delegation", "dns-interface", "dns-ipv4-addr", "dns-ipv6-addr", "dns-servers", "doh-url",
        "dump-header", "egd-file", "engine", "etag-compare", "etag-save", "expect100-timeout", "form", "form-string", "ftp-account",
        "ftp-alternative-to-user", "ftp-method", "ftp-port", "ftp-ssl-ccc-mode", "happy-eyeballs-timeout-ms", "header", "help", "hostpubmd5",
        "hostpubsha256", "hsts", "interface", "json", "keepalive-time", "key", "key-type", "krb", "libcurl", "limit-rate", "local-port",
        "login-options", "mail-auth", "mail-from", "mail-rcpt", "max-filesize", "max-redirs", "max-time", "netrc-file", "noproxy",
        "oauth2-bearer", "output", "output-dir", "parallel-max", "pass", "pinnedpubkey", "preproxy", "proto", "proto-default", "proto-redir",
        "proxy", "proxy-cacert", "proxy-capath", "proxy-cert", "proxy-cert-type", "proxy-ciphers", "proxy-crlfile", "proxy-header",
        "proxy-key", "proxy-key-type", "proxy-pass", "proxy-pinnedpubkey", "proxy-service-name", "proxy-tls13-ciphers", "proxy-tlsauthtype",
        "proxy-tlspassword", "proxy-tlsuser", "proxy-user", "pubkey", "quote", "random-file", "range", "rate", "referer", "request",
        "request-target", "resolve", "retry", "retry-delay", "retry-max-time", "sasl-authzid", "service-name", "socks4", "socks4a", "socks5",
        "socks5-gssapi-service", "socks5-hostname", "speed-limit", "speed-time", "stderr", "telnet-option", "tftp-blksize", "time-cond",
        "tls-max", "tls13-ciphers", "tlsauthtype", "tlspassword", "tlsuser", "trace", "trace-ascii", "unix-socket", "upload-file", "url",
        "url-query", "user", "user-agent", "write-out",
    },
)  # fmt: skip
_CURL_DATA_FILE = {"-d", "--data", "--data-binary", "--data-ascii", "--json"}


def _curl(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    options, positionals = _CURL.scan(args)
    named: list[str] = []
    urls = list(positionals)
    for name, value in options:
        if value is None:
            continue
        if name in ("-T", "--upload-file"):
            named.extend(_curl_upload_list(value))
        elif name in ("-F", "--form"):
            _, eq, content = value.partition("=")
            if eq and content[:1] in ("@", "<"):
                named.append(_curl_form_file(content[1:]))
        elif name in _CURL_DATA_FILE and value.startswith("@"):
            named.append(value[1:])
        elif name == "--data-urlencode" and "=" not in value and "@" in value:
            named.append(value.partition("@")[2])
        elif name == "--url":
            urls.insert(0, value)
    if not urls or not named:
        return None
    destination = parse_url(urls[0], tool="curl", default_scheme="http")
    return UploadIntent("curl", _files(named, cwd), destination)


def _curl_upload_list(value: str) -> list[str]:
    """``-T`` names one file or a ``{a,b,c}`` list (curl's globbing), ``-`` and ``.`` being stdin."""
    if value in ("-", "."):
        return []
    match = re.fullmatch(r"(.*)\{([^{}]*)\}(.*)", value, re.DOTALL)
    if match is None:
        return [value]
    head, choices, tail = match.groups()
    return [head + choice + tail for choice in choices.split(",")[:MAX_ARGS]]


def _curl_form_file(spec: str) -> str:
    """The file of ``-F name=@file;type=...``: a quoted name may hold ``;``."""
    if spec.startswith('"'):
        end = spec.find('"', 1)
        return spec[1:end] if end != -1 else spec[1:]
    return spec.split(";", 1)[0]


_WGET = _Options(
    "eoaiBtOTwQPUlARDIX",
    {
        "execute", "output-file", "append-output", "input-file", "base", "config", "tries", "output-document", "timeout", "wait", "quota",
        "directory-prefix", "user-agent", "level", "accept", "reject", "domains", "include-directories", "exclude-directories",
        "report-speed", "rejected-log", "retry-on-http-error", "start-pos", "progress", "dns-timeout", "connect-timeout", "read-timeout",
        "waitretry", "bind-address", "limit-rate", "restrict-file-names", "prefer-family", "user", "password", "use-askpass",
        "local-encoding", "remote-encoding", "cut-dirs", "http-user", "http-password", "default-page", "header", "compression",
        "proxy-user", "proxy-password", "referer", "load-cookies", "save-cookies", "post-data", "post-file", "method", "body-data",
        "body-file", "secure-protocol", "certificate", "certificate-type", "private-key", "private-key-type", "ca-certificate",
        "ca-directory", "crl-file", "pinnedpubkey", "ciphers", "ftp-user", "ftp-password", "warc-file", "warc-header", "warc-max-size",
        "warc-dedup", "warc-tempdir", "backups", "accept-regex", "reject-regex", "regex-type", "exclude-domains", "follow-tags", "ignore-tags",
    },
)  # fmt: skip


def _wget(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    options, urls = _WGET.scan(args)
    named = [value for name, value in options if name in ("--post-file", "--body-file") and value]
    if not urls or not named:
        return None
    destination = parse_url(urls[0], tool="wget", default_scheme="http")
    return UploadIntent("wget", _files(named, cwd), destination)


_RCLONE_UPLOADS = {"copy", "copyto", "move", "moveto", "sync"}
_RCLONE = _Options(
    "",
    {
        "transfers", "checkers", "config", "bwlimit", "log-file", "log-level", "include", "exclude", "filter", "include-from", "exclude-from",
        "filter-from", "files-from", "files-from-raw", "min-size", "max-size", "min-age", "max-age", "max-transfer", "max-depth",
        "buffer-size", "backup-dir", "suffix", "timeout", "contimeout", "retries", "low-level-retries", "stats", "user-agent", "order-by",
        "multi-thread-streams", "multi-thread-cutoff", "compare-dest", "copy-dest", "cache-dir", "header", "header-upload",
        "password-command", "tpslimit", "drive-chunk-size", "s3-chunk-size", "s3-upload-concurrency", "stats-log-level", "cutoff-mode",
    },
)  # fmt: skip
_RCLONE_REMOTE = re.compile(r"^(:?[\w. -]{1,255}?|:[\w-]+(?:,[^:]*)?):(.*)$", re.DOTALL)


def _rclone(args: Sequence[str], cwd: str | None) -> UploadIntent | None:
    """``rclone copy|copyto|move|moveto|sync <local> <remote>:<path>``: rclone's value-taking flags
    are too many to list, so the common ones are, and the last two operands are read."""
    _, operands = _RCLONE.scan(args)
    if len(operands) < 3 or operands[0] not in _RCLONE_UPLOADS:
        return None
    source, target = operands[-2], operands[-1]
    match = _RCLONE_REMOTE.match(target)
    if match is None or "/" in match.group(1) or _RCLONE_REMOTE.match(source) and "/" not in source.partition(":")[0]:
        return None
    remote = match.group(1).split(",", 1)[0].strip()
    if not remote or remote == ":":
        return None
    destination = Destination("rclone", "rclone", remote.lower(), None, match.group(2) or None, f"{remote}:{match.group(2)}")
    return UploadIntent("rclone", _files([source], cwd), destination)


_READERS = {"scp": _scp, "sftp": _sftp, "rsync": _rsync, "curl": _curl, "wget": _wget, "rclone": _rclone}
