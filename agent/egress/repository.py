"""A git repository the agent saw a push, remote change or clone in: where it is, its remotes, its HEAD.

The repository belongs to whoever pushes from it, so it is read as hostile: the config is parsed
here (no includes, no programs run, at most MAX_CONFIG bytes), and git itself only runs read-only
plumbing, with the user's and system configuration ignored, hooks, fsmonitor and every transport
switched off (a partial clone would otherwise fetch missing blobs), bounded in time and output,
and, when the agent holds capabilities, with all of them dropped but CAP_DAC_READ_SEARCH.
"""

from __future__ import annotations

import os
import posixpath
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from types import TracebackType
from typing import IO, Any, Self

MAX_LEVELS = 256
MAX_CONFIG = 1 << 20
MAX_VALUE = 8192
MAX_REMOTES = 1000
MAX_ROOTS = 4
MAX_BLOB = 64 << 20
"""A file larger than this at HEAD is not read (the scan is partial): one blob is held at a time."""
CAP_DAC_READ_SEARCH = 2
CAP_SETPCAP = 8
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_SHA = re.compile(rb"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
_SAFE_CONFIG = (
    "-c", "safe.directory=*", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "protocol.allow=never",
    "-c", "core.untrackedCache=false", "-c", "core.splitIndex=false",
)  # fmt: skip


class RepositoryError(Exception):
    """git could not answer: not a repository, timed out, failed, or said too much."""


def find_top(start: str) -> str | None:
    """The top folder of the repository holding ``start`` (a ``.git`` folder or gitfile there, or a
    bare repository), walking up at most MAX_LEVELS folders; None outside any repository."""
    if not start or "\x00" in start or not start.startswith("/"):
        return None
    path = posixpath.normpath(start)
    parts = path.split("/")
    if ".git" in parts:  # inside a .git folder: its parent is the top
        return "/".join(parts[: parts.index(".git")]) or "/"
    for _ in range(MAX_LEVELS):
        if git_dir(path) is not None:
            return path
        parent = posixpath.dirname(path)
        if parent == path:
            return None
        path = parent
    return None


def git_dir(top: str) -> str | None:
    """The git folder of the repository whose top is ``top``: ``.git``, where a gitfile points
    (worktrees, submodules), or ``top`` itself when it is a bare repository."""
    dot_git = os.path.join(top, ".git")
    try:
        if os.path.isdir(dot_git):
            return dot_git
        if os.path.isfile(dot_git):
            with open(dot_git, "rb") as handle:
                text = handle.read(4096).decode("utf-8", "replace")
            if text.startswith("gitdir:"):
                target = text[len("gitdir:") :].strip()
                if target and "\x00" not in target:
                    return posixpath.normpath(os.path.join(top, target))
            return None
        if os.path.isfile(os.path.join(top, "HEAD")) and os.path.isdir(os.path.join(top, "objects")) and os.path.isdir(os.path.join(top, "refs")):
            return top
    except (OSError, ValueError):
        return None
    return None


def _common_dir(gitdir: str) -> str:
    """Where a worktree's shared config and refs are (its ``commondir``), else ``gitdir`` itself."""
    try:
        with open(os.path.join(gitdir, "commondir"), "rb") as handle:
            common = handle.read(4096).decode("utf-8", "replace").strip()
    except OSError:
        return gitdir
    if not common or "\x00" in common:
        return gitdir
    return posixpath.normpath(os.path.join(gitdir, common))


def head_branch(top: str) -> str | None:
    """The branch HEAD names (``main`` for ``ref: refs/heads/main``), None when detached or unreadable."""
    gitdir = git_dir(top)
    if gitdir is None:
        return None
    try:
        with open(os.path.join(gitdir, "HEAD"), "rb") as handle:
            text = handle.read(4096).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not text.startswith("ref:"):
        return None
    ref = text[len("ref:") :].strip()
    return ref[len("refs/heads/") :] if ref.startswith("refs/heads/") and len(ref) > len("refs/heads/") else None


def _config_entries(path: str) -> Iterator[tuple[str, str | None, str, str]]:
    """(section, subsection, key, value) of a git config file, as git reads them: section and key
    lower-cased, quoted parts, escapes, comments and continued lines. Includes are not followed."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_CONFIG).decode("utf-8", "replace")
    except OSError:
        return
    section, subsection = "", None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c in "#;":
            end = text.find("\n", i)
            i = n if end == -1 else end + 1
        elif c == "[":
            end = text.find("]", i)
            if end == -1:
                return
            header = _section_header(text[i + 1 : end])
            if header is None:
                return  # git refuses the whole file at a bad header
            section, subsection = header
            i = end + 1
        else:
            match = _KEY.match(text, i)
            if match is None:
                return
            key = match.group(0).lower()
            i = match.end()
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == "=":
                value, i = _config_value(text, i + 1)
                if value is None:
                    return
                if len(value) <= MAX_VALUE:
                    yield section, subsection, key, value
            else:
                end = text.find("\n", i)
                i = n if end == -1 else end + 1


def _section_header(header: str) -> tuple[str, str | None] | None:
    quoted = re.fullmatch(r'\s*([A-Za-z0-9.-]+)\s+"((?:[^"\\\n]|\\.)*)"\s*', header, re.DOTALL)
    if quoted:
        return quoted.group(1).lower(), re.sub(r"\\(.)", r"\1", quoted.group(2))
    plain = re.fullmatch(r"\s*([A-Za-z0-9-]+)(?:\.([A-Za-z0-9.-]+))?\s*", header)
    if plain:  # the old [section.subsection] form, whose subsection git lower-cases
        return plain.group(1).lower(), plain.group(2).lower() if plain.group(2) else None
    return None


_ESCAPES = {"n": "\n", "t": "\t", "b": "\b", '"': '"', "\\": "\\"}


def _config_value(text: str, i: int) -> tuple[str | None, int]:
    """A value from ``i`` to the end of its line: quotes, escapes, ``\\`` continuations, comments."""
    out: list[str] = []
    quoted = False
    pending_space = ""
    started = False
    n = len(text)
    while i < n:
        c = text[i]
        i += 1
        if c == "\n":
            if quoted:
                return None, i
            break
        if not quoted and c in "#;":
            end = text.find("\n", i)
            i = n if end == -1 else end + 1
            break
        if not quoted and c in " \t":
            if started:
                pending_space += c
            continue
        if c == "\\":
            if i >= n:
                return None, i
            nxt = text[i]
            i += 1
            if nxt == "\n":
                continue
            if nxt == "\r" and text[i : i + 1] == "\n":
                i += 1
                continue
            if nxt not in _ESCAPES:
                return None, i
            c = _ESCAPES[nxt]
            out.append(pending_space + c)
            pending_space = ""
            started = True
            continue
        if c == '"':
            quoted = not quoted
            started = True
            out.append(pending_space)
            pending_space = ""
            continue
        if c == "\r" and text[i : i + 1] == "\n":
            continue
        out.append(pending_space + c)
        pending_space = ""
        started = True
    return "".join(out), i


def _config_path(top: str) -> str | None:
    gitdir = git_dir(top)
    return os.path.join(_common_dir(gitdir), "config") if gitdir is not None else None


def read_remotes(top: str) -> dict[str, dict[str, list[str]]]:
    """``{name: {"url": [...], "pushurl": [...]}}`` from the repository's own config (worktrees read
    the shared one); at most MAX_REMOTES remotes."""
    path = _config_path(top)
    remotes: dict[str, dict[str, list[str]]] = {}
    if path is None:
        return remotes
    for section, subsection, key, value in _config_entries(path):
        if section != "remote" or subsection is None or key not in ("url", "pushurl"):
            continue
        if subsection not in remotes:
            if len(remotes) >= MAX_REMOTES:
                continue
            remotes[subsection] = {"url": [], "pushurl": []}
        remotes[subsection][key].append(value)
    return remotes


def remote_push_urls(top: str, name: str) -> list[str]:
    """Where ``git push <name>`` sends: the remote's pushurls, else its urls rewritten by
    ``url.<base>.pushInsteadOf`` (else ``insteadOf``) as git does; [] for a name that is no remote."""
    path = _config_path(top)
    if path is None:
        return []
    urls: list[str] = []
    pushurls: list[str] = []
    instead: list[tuple[str, str]] = []
    push_instead: list[tuple[str, str]] = []
    for section, subsection, key, value in _config_entries(path):
        if section == "remote" and subsection == name:
            if key == "url":
                urls.append(value)
            elif key == "pushurl":
                pushurls.append(value)
        elif section == "url" and subsection is not None and len(instead) + len(push_instead) < MAX_REMOTES:
            if key == "insteadof":
                instead.append((value, subsection))
            elif key == "pushinsteadof":
                push_instead.append((value, subsection))
    if pushurls:
        return [_rewrite(url, instead) or url for url in pushurls]
    return [_rewrite(url, push_instead) or _rewrite(url, instead) or url for url in urls]


def push_remote_name(top: str, branch: str | None = None) -> str:
    """The remote a bare ``git push`` uses on ``branch`` (HEAD's by default): the branch's
    ``pushRemote``, else ``remote.pushDefault``, else the branch's ``remote``, else ``origin``."""
    branch = branch if branch is not None else head_branch(top)
    path = _config_path(top)
    found: dict[str, str] = {}
    if path is not None:
        for section, subsection, key, value in _config_entries(path):
            if section == "branch" and subsection == branch and key in ("pushremote", "remote"):
                found[key] = value
            elif section == "remote" and subsection is None and key == "pushdefault":
                found[key] = value
    for key in ("pushremote", "pushdefault", "remote"):
        if found.get(key):
            return found[key]
    return "origin"


def _rewrite(url: str, rules: list[tuple[str, str]]) -> str | None:
    """``url`` with the longest matching prefix replaced by its base (git's insteadOf), or None."""
    best = max((rule for rule in rules if url.startswith(rule[0])), key=lambda rule: len(rule[0]), default=None)
    return best[1] + url[len(best[0]) :] if best is not None else None


def _git_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH") or "/usr/bin:/bin", "LANG": "C", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_NO_LAZY_FETCH": "1", "GIT_PROTOCOL_FROM_USER": "0",
    }  # fmt: skip


def _capabilities() -> int:
    try:
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def privilege_prefix(capabilities: int | None = None) -> list[str]:
    """The ``setpriv`` command that starts git with every capability dropped but
    CAP_DAC_READ_SEARCH (which it keeps only if the agent has it); [] without capabilities or setpriv."""
    caps = _capabilities() if capabilities is None else capabilities
    setpriv = shutil.which("setpriv", path=_git_env()["PATH"])
    if not caps or setpriv is None:
        return []
    keep = "-all,+dac_read_search" if caps & (1 << CAP_DAC_READ_SEARCH) else "-all"
    prefix = [setpriv, f"--inh-caps={keep}", f"--ambient-caps={keep}"]
    if caps & (1 << CAP_SETPCAP):
        prefix.append(f"--bounding-set={keep}")
    return [*prefix, "--no-new-privs", "--"]


def _command(top: str, args: tuple[str, ...]) -> list[str]:
    gitdir = git_dir(top)
    if gitdir is None:
        raise RepositoryError(f"{top} is not a git repository")
    git = shutil.which("git", path=_git_env()["PATH"])
    if git is None:
        raise RepositoryError("git is not installed")
    return [*privilege_prefix(), git, *_SAFE_CONFIG, f"--git-dir={gitdir}", *args]


def _start(top: str, args: tuple[str, ...], *, stdin: int | None = subprocess.DEVNULL, stderr: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    command = _command(top, args)
    try:
        # git takes the folder it runs in as the work tree when given --git-dir
        return subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr, env=_git_env(), cwd=top, close_fds=True)
    except OSError as exc:
        raise RepositoryError(f"could not run git: {exc}") from exc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    proc.wait()


def run_git(top: str, *args: str, timeout: float = 10.0, max_output: int = 1 << 20) -> bytes:
    """Run read-only git plumbing in the repository at ``top``; its output.

    Raises:
        RepositoryError: not a repository, git failed (its message), timed out, or wrote more than ``max_output``.
    """
    proc = _start(top, args)
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    open_fds = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    try:
        while open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RepositoryError(f"git {args[0] if args else ''} timed out after {timeout:g}s")
            ready, _, _ = select.select(list(open_fds), [], [], remaining)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    del open_fds[fd]
                    continue
                open_fds[fd].extend(chunk)
                if len(out) > max_output:
                    raise RepositoryError(f"git {args[0] if args else ''} wrote more than {max_output} bytes")
                if len(err) > 65536:
                    del err[4096:]
        remaining = max(deadline - time.monotonic(), 0.001)
        try:
            code = proc.wait(remaining)
        except subprocess.TimeoutExpired:
            raise RepositoryError(f"git {args[0] if args else ''} timed out after {timeout:g}s") from None
        if code != 0:
            message = err.decode("utf-8", "replace").strip().splitlines()
            raise RepositoryError(f"git {args[0] if args else ''} failed ({code}): {message[-1] if message else ''}"[:600])
        return bytes(out)
    finally:
        _stop(proc)


def facts(top: str) -> dict[str, Any]:
    """What git says of the repository without reading files: HEAD's commit (None before the first
    commit), its branch, and up to MAX_ROOTS root commits (what copies of it share).

    Raises:
        RepositoryError: as ``run_git``.
    """
    head = _head(top)
    roots: list[str] = []
    if head is not None:
        out = run_git(top, "rev-list", "--max-parents=0", f"--max-count={MAX_ROOTS}", head, timeout=30.0, max_output=4096)
        roots = [line.decode() for line in out.split() if _SHA.match(line)][:MAX_ROOTS]
    return {"path": top, "head": head, "branch": head_branch(top), "root_commits": roots}


def _head(top: str) -> str | None:
    """HEAD's commit; None in an empty repository (git exits 1: HEAD names no commit yet)."""
    try:
        out = run_git(top, "rev-parse", "--verify", "-q", "HEAD^{commit}", timeout=10.0).strip()
    except RepositoryError as exc:
        if "failed (1)" in str(exc):
            return None
        raise
    if not _SHA.match(out):
        raise RepositoryError(f"unexpected rev-parse output {out[:80]!r}")
    return out.decode()


class _Pipe:
    """Buffered reads from a pipe that give up at a deadline (``select`` on the descriptor)."""

    def __init__(self, stream: IO[bytes], deadline: float) -> None:
        self._fd = stream.fileno()
        self._buffer = bytearray()
        self._deadline = deadline
        self._eof = False

    def _fill(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise RepositoryError("reading the repository timed out")
        ready, _, _ = select.select([self._fd], [], [], remaining)
        if not ready:
            raise RepositoryError("reading the repository timed out")
        chunk = os.read(self._fd, 1 << 20)
        if not chunk:
            self._eof = True
        self._buffer.extend(chunk)

    def read_until(self, separator: bytes, limit: int) -> bytes | None:
        """Up to (not including) ``separator``; None at the end of the stream."""
        start = 0
        while True:
            at = self._buffer.find(separator, start)
            if at != -1:
                record = bytes(self._buffer[:at])
                del self._buffer[: at + len(separator)]
                return record
            if len(self._buffer) > limit:
                raise RepositoryError("git wrote a record longer than expected")
            if self._eof:
                if self._buffer:
                    raise RepositoryError("git's output ended mid-record")
                return None
            start = max(len(self._buffer) - len(separator) + 1, 0)
            self._fill()

    def read_exact(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            if not self._buffer:
                if self._eof:
                    raise RepositoryError("git's output ended mid-object")
                self._fill()
            take = min(size - len(chunks), len(self._buffer))
            chunks.extend(self._buffer[:take])
            del self._buffer[:take]
        return bytes(chunks)


class HeadReader:
    """The regular files at HEAD, one ``(path, content)`` at a time, within a file and byte budget.

    One ``ls-tree`` lists HEAD, one ``cat-file --batch`` hands over each blob; symlinks and submodules
    are skipped. ``status`` is ``complete`` when every file was read, ``partial`` when the budget
    (or MAX_BLOB) left some out, ``failed`` when git could not answer (iteration then raises
    RepositoryError). ``files`` and ``bytes`` count what was handed over. ``close()`` stops git.
    """

    def __init__(self, top: str, *, max_files: int, max_bytes: int, timeout: float = 120.0) -> None:
        self.top = top
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.status = "complete"
        self.files = 0
        self.bytes = 0
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        while self._procs:
            _stop(self._procs.pop())

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        try:
            yield from self._read()
        except RepositoryError:
            self.status = "failed"
            raise
        finally:
            self.close()

    def _read(self) -> Iterator[tuple[str, bytes]]:
        deadline = time.monotonic() + self.timeout
        if _head(self.top) is None:
            return
        tree = _start(self.top, ("ls-tree", "-r", "-z", "-l", "--full-tree", "HEAD"), stderr=subprocess.DEVNULL)
        self._procs.append(tree)
        batch = _start(self.top, ("cat-file", "--batch"), stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._procs.append(batch)
        assert tree.stdout is not None and batch.stdin is not None and batch.stdout is not None
        entries, blobs = _Pipe(tree.stdout, deadline), _Pipe(batch.stdout, deadline)
        while True:
            record = entries.read_until(b"\x00", 1 << 16)
            if record is None:
                self._finish(tree, deadline)
                break
            meta, tab, raw_path = record.partition(b"\t")
            fields = meta.split()
            if not tab or len(fields) != 4:
                raise RepositoryError("unexpected ls-tree output")
            mode, kind, sha, size_text = fields
            if kind != b"blob" or not mode.startswith(b"100"):
                continue  # symlinks (120000), submodules (160000 commit)
            if self.files >= self.max_files:
                self.status = "partial"
                break
            size = int(size_text) if size_text.isdigit() else -1
            if size < 0 or size > MAX_BLOB or self.bytes + size > self.max_bytes:
                self.status = "partial"
                continue
            data = self._blob(batch.stdin, blobs, sha, size)
            self.files += 1
            self.bytes += size
            yield raw_path.decode("utf-8", "replace"), data

    @staticmethod
    def _finish(tree: subprocess.Popen[bytes], deadline: float) -> None:
        try:
            code = tree.wait(max(deadline - time.monotonic(), 0.001))
        except subprocess.TimeoutExpired:
            raise RepositoryError("reading the repository timed out") from None
        if code != 0:
            raise RepositoryError(f"git ls-tree failed ({code})")

    @staticmethod
    def _blob(requests: IO[bytes], replies: _Pipe, sha: bytes, size: int) -> bytes:
        try:
            requests.write(sha + b"\n")
            requests.flush()
        except OSError as exc:
            raise RepositoryError(f"git cat-file stopped: {exc}") from exc
        header = replies.read_until(b"\n", 256)
        if header is None:
            raise RepositoryError("git cat-file stopped")
        parts = header.split()
        if len(parts) != 3 or parts[0] != sha or parts[1] != b"blob" or parts[2] != str(size).encode():
            raise RepositoryError(f"unexpected cat-file reply {header[:120]!r}")
        data = replies.read_exact(size)
        if replies.read_exact(1) != b"\n":
            raise RepositoryError("unexpected cat-file framing")
        return data
