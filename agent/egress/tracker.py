"""From programs starting to egress work: pushes, new remotes, copies of protected repositories, uploads.

The process source (agent/sources/proc_events.py) reports every exec on its reader thread; this
module keeps only the few that matter (git, the transports a push runs, the upload tools), takes
their ``process`` facts there while the process surely runs, and does the rest on its own thread.

A push is a tree of processes: ``git push`` (the repository is its working folder, the refs its
arguments) starts the transport that names the destination: ``git-remote-https <remote> <url>``,
``ssh host "git-receive-pack '/path'"``, or a local ``git-receive-pack`` (file and local
transports). The push is recorded when ``git push`` exits, with the destination from the first
transport seen under it, or else from the remote's configured URL. A receive-pack with no
``git push`` above it (``git send-pack``, a push whose own start was not seen) is a push too.
A remote helper alone is not: fetches and clones run it the same way.

Copies: the root commits of the repositories under ``[protected] folders`` are learnt at start;
``git clone`` (checked when it exits) and any git command run in a repository outside those
folders (a copy made with ``cp -r`` is found the first time git is used in it) compare their
root commits with them.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
import queue
import re
import threading
import time
from typing import Any

from agent import events, procinfo
from agent.config import EgressSection
from agent.egress import commands, remotes, repository, uploads
from agent.egress.remotes import Destination
from agent.sources.proc_events import ProcessStart
from agent.sources.proc_exits import ExitWatcher
from agent.sources.work import EgressWork, Emit
from agent.threads import StoppableThread

log = logging.getLogger(__name__)

QUEUE_SIZE = 4096
EXIT_GRACE_S = 0.3
"""After ``git push`` exits, how long its transports' starts (read by the source's thread a
moment later than they happened) may still arrive before the push is recorded."""
MAX_SESSIONS = 1024
MAX_WAIT_S = 6 * 3600.0
"""A push still running after this long is recorded with what is known (a hung transport)."""
COPY_RECHECK_S = 600.0
PROTECTED_SCAN_DEPTH = 3
MAX_PROTECTED_REPOS = 512
_SHELLS = {"sh", "dash", "bash"}


class _Push:
    __slots__ = ("pid", "start", "process", "invocation", "intent", "destination", "deadline")

    def __init__(self, start: ProcessStart, process: dict[str, Any], invocation: commands.GitInvocation, intent: commands.PushIntent):
        self.pid = start.pid
        self.start = start
        self.process = process
        self.invocation = invocation
        self.intent = intent
        self.destination: Destination | None = None
        self.deadline = time.monotonic() + MAX_WAIT_S


class EgressTracker(StoppableThread):
    """Turns process starts into EgressWork handed to ``emit`` (the pipeline)."""

    def __init__(
        self,
        config: EgressSection,
        protected_folders: list[str],
        emit: Emit,
        *,
        exits: ExitWatcher | None = None,
        writers: procinfo.WriterCache | None = None,
    ):
        super().__init__(name="egress")
        self._config = config
        self._folders = [os.path.realpath(f) for f in protected_folders]
        self._emit = emit
        self._exits = exits or ExitWatcher()
        self._writers = writers or procinfo.WriterCache()
        self._tools = frozenset(config.upload_tools) if config.uploads else frozenset()
        self._queue: queue.Queue[tuple[str, Any, Any]] = queue.Queue(maxsize=QUEUE_SIZE)
        self._pushes: dict[int, _Push] = {}
        self._due: list[tuple[float, int]] = []  # (monotonic deadline, push pid) to record
        self._roots: dict[str, str] = {}  # root commit -> protected repository
        self._checked: dict[str, float] = {}  # repository top -> when its copy check ran
        self._lone: dict[int, float] = {}  # receive-packs recorded without a ``git push`` above them
        self._stats_lock = threading.Lock()
        self.dropped = 0
        self.recorded: dict[str, int] = {t: 0 for t in events.EGRESS_TYPES}
        self._learnt = threading.Event()

    # The process source's thread --------------------------------------------

    def on_exec(self, start: ProcessStart) -> None:
        """Called for every exec: keep the relevant ones, with their facts read now."""
        if not start.argv:
            return
        name = os.path.basename(start.argv[0])
        if not self._relevant(name, start.argv):
            return
        process = self._writers.writer(start.pid)
        try:
            self._queue.put_nowait(("exec", start, process))
        except queue.Full:
            with self._stats_lock:
                self.dropped += 1

    def _relevant(self, name: str, argv: tuple[str, ...], *, unwrap: bool = True) -> bool:
        if name in self._tools:
            return True
        if not self._config.git:
            return False
        if name == "git" or name.startswith("git-") or name == "ssh":
            return True
        if name not in _SHELLS or len(argv) < 2:
            return False
        if argv[1] == "-c":
            return len(argv) >= 3 and "receive-pack" in argv[2]
        # A wrapper script (an ``ssh`` that is a shell script shows as ``/bin/sh /path/ssh host ...``).
        # One level only: ``sh sh sh ...`` must not recurse through a hostile argv.
        return unwrap and not argv[1].startswith("-") and self._relevant(os.path.basename(argv[1]), argv[1:], unwrap=False)

    def _exited(self, pid: int) -> None:
        try:
            self._queue.put_nowait(("exit", pid, None))
        except queue.Full:  # recorded anyway when its deadline passes
            with self._stats_lock:
                self.dropped += 1

    # Own thread ---------------------------------------------------------------

    def run_loop(self) -> None:
        if not self._learnt.is_set():
            self._learn_protected()
            self._learnt.set()
        while not self.stopping:
            # No timeout but the next push to record: an idle tracker sleeps until an exec, an exit or ``stop``.
            timeout = max(0.0, self._due[0][0] - time.monotonic()) if self._due else None
            try:
                kind, item, extra = self._queue.get(timeout=timeout)
            except queue.Empty:
                kind = ""
            if kind == "exec":
                self._handle(item, extra)
            elif kind == "clone":
                top = repository.find_top(item)
                if top is not None:
                    self._check_copy(top, extra, force=True)
            elif kind == "exit":
                push = self._pushes.get(item)
                if push is not None:
                    heapq.heappush(self._due, (time.monotonic() + EXIT_GRACE_S, item))
            self._record_due()

    def start(self) -> None:
        self._exits.start()
        super().start()

    def stop(self, timeout: float | None = 5.0) -> None:
        super().stop(timeout)
        self._exits.stop()

    def on_stop(self) -> None:
        try:
            self._queue.put_nowait(("", None, None))  # wakes the loop, asleep in ``get`` with no timeout
        except queue.Full:
            pass

    def health(self) -> dict[str, str]:
        counts = ", ".join(f"{n} {t}" for t, n in self.recorded.items() if n)
        message = f"{len(self._roots)} protected root commit(s); recorded: {counts or 'nothing yet'}"
        if self.dropped:
            return {"state": "degraded", "message": f"{message}; {self.dropped} process start(s) not followed (queue full)"}
        return {"state": "ok", "message": message}

    def wait_ready(self, timeout: float) -> bool:
        """True once the protected repositories' root commits are known (tests and status)."""
        return self._learnt.wait(timeout)

    def _handle(self, start: ProcessStart, process: dict[str, Any]) -> None:
        name = os.path.basename(start.argv[0])
        if name in self._tools:
            self._upload(start, process)
            return
        transport = commands.push_transport(start.argv, start.cwd)
        if transport is not None:
            self._transport(start, process, transport)
            return
        invocation = commands.git_invocation(start.argv, start.cwd)
        if invocation is None:
            return
        top = self._top(invocation)
        if top is not None:
            self._check_copy(top, process)
        if invocation.subcommand == "push":
            intent = commands.push_intent(invocation)
            if intent is not None and len(self._pushes) < MAX_SESSIONS:
                self._pushes[start.pid] = push = _Push(start, process, invocation, intent)
                heapq.heappush(self._due, (push.deadline, start.pid))
                self._exits.watch(start.pid, self._exited)
        elif invocation.subcommand in ("remote", "config") and top is not None:
            change = commands.remote_change(invocation)
            if change is not None:
                self._remote_changed(top, change.name, change.url, process)
        elif invocation.subcommand == "clone":
            clone = commands.clone_intent(invocation)
            if clone is not None:
                target = clone.target
                self._exits.watch(start.pid, lambda _pid: self._queue_clone_check(target, process))

    def _queue_clone_check(self, target: str, process: dict[str, Any]) -> None:
        # Called on the exit watcher's thread: the check itself runs git, so it goes to this thread.
        try:
            self._queue.put_nowait(("clone", target, process))
        except queue.Full:
            with self._stats_lock:
                self.dropped += 1

    def _transport(self, start: ProcessStart, process: dict[str, Any], transport: commands.TransportStart) -> None:
        ancestors = [process.get("ppid"), *(p.get("pid") for p in process.get("parents") or [])]
        for pid in ancestors:
            push = self._pushes.get(pid) if isinstance(pid, int) else None
            if push is not None:
                if push.destination is None:
                    push.destination = transport.destination
                return
        if transport.kind != "receive-pack":
            return  # a remote helper outside a push: a fetch, a clone, ls-remote
        # A local push shows twice: git's ``sh -c "git-receive-pack '<path>'"`` and the receive-pack it forks.
        if process.get("ppid") in self._lone:
            return
        self._lone[start.pid] = time.monotonic()
        if len(self._lone) > MAX_SESSIONS:
            self._lone = dict(list(self._lone.items())[MAX_SESSIONS // 2 :])
        # A push whose own start was not seen: the transport's parent (or its own folder) is the repository.
        parent = next((p for p in process.get("parents") or [] if p.get("pid") == process.get("ppid")), None)
        cwd = _cwd(process.get("ppid")) or start.cwd
        top = repository.find_top(cwd) if cwd else None
        self._record_push(top, transport.destination, (), parent or process)

    def _record_due(self) -> None:
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            _, pid = heapq.heappop(self._due)
            push = self._pushes.pop(pid, None)
            if push is None:
                continue
            top = self._top(push.invocation)
            # A URL or path typed on the command line says the transport as the user chose it (file://
            # and a plain path run the same receive-pack); a remote's name leaves it to what ran.
            typed = push.intent.remote if push.intent.remote and _url_like(push.intent.remote) else None
            # git resolves a relative path from the repository's top, where it has moved by then.
            destination = _parse(typed, cwd=top or push.invocation.cwd) if typed else None
            destination = destination or push.destination or self._configured_destination(top, push)
            if destination is None:
                log.info("push by pid %d: destination unknown (remote %r)", pid, push.intent.remote)
                continue
            refs = push.intent.refspecs or push.intent.flags
            if not refs and top is not None:
                branch = repository.head_branch(top)
                refs = (f"refs/heads/{branch}",) if branch else ()
            self._record_push(top, destination, refs, push.process)

    def _configured_destination(self, top: str | None, push: _Push) -> Destination | None:
        remote = push.intent.remote or (repository.push_remote_name(top) if top is not None else "origin")
        cwd = push.invocation.cwd
        if top is not None:
            urls = repository.remote_push_urls(top, remote)
            if urls:
                return _parse(urls[0], cwd=top, remote=remote)
        if push.intent.remote is not None and _url_like(remote):
            return _parse(remote, cwd=top or cwd)
        return None

    def _record_push(self, top: str | None, destination: Destination, refs: tuple[str, ...], process: dict[str, Any]) -> None:
        if remotes.remote_allowed(destination.to_dict(), self._config.allowed_remotes):
            return
        self._submit(EgressWork(
            type=events.GIT_PUSH, destination=destination.to_dict(), process=process, repository=top,
            repository_facts=self._facts(top) if top else None, refs=tuple(r[:1024] for r in refs[:100]),
        ))  # fmt: skip

    def _remote_changed(self, top: str, name: str, url: str, process: dict[str, Any]) -> None:
        destination = _parse(url, cwd=top, remote=name)
        if destination is None or remotes.remote_allowed(destination.to_dict(), self._config.allowed_remotes):
            return
        self._submit(EgressWork(type=events.GIT_REMOTE, destination=destination.to_dict(), process=process, repository=top, repository_facts=self._facts(top)))

    def _check_copy(self, top: str, process: dict[str, Any], *, force: bool = False) -> None:
        """A repository outside the protected folders sharing a root commit with one inside them."""
        if self._protected_folder(top) is not None:
            self._remember_roots(top)
            return
        if not self._roots:
            return  # no protected repository known: nothing to be a copy of, and no git to run
        now = time.monotonic()
        if not force and now - self._checked.get(top, -COPY_RECHECK_S) < COPY_RECHECK_S:
            return
        self._checked[top] = now
        if len(self._checked) > 4 * MAX_SESSIONS:
            self._checked = {t: at for t, at in self._checked.items() if now - at < COPY_RECHECK_S}
        facts = self._facts(top)
        original = facts.get("copy_of")
        if original is None:
            return
        destination = Destination(tool="git", transport="local", host=None, port=None, path=top, url=top)
        self._submit(EgressWork(type=events.GIT_CLONE, destination=destination.to_dict(), process=process, repository=top, repository_facts=facts))

    def _upload(self, start: ProcessStart, process: dict[str, Any]) -> None:
        intent = uploads.upload_intent(start.argv, start.cwd, tools=self._tools)
        if intent is None or not intent.files:
            return
        if remotes.remote_allowed(intent.destination.to_dict(), self._config.allowed_remotes):
            return
        self._submit(EgressWork(type=events.NET_UPLOAD, destination=intent.destination.to_dict(), process=process, files=intent.files))

    def _submit(self, work: EgressWork) -> None:
        work = dataclasses.replace(work, process=scrub_process(work.process))
        if self._emit(work):
            with self._stats_lock:
                self.recorded[work.type] += 1

    # Repositories -------------------------------------------------------------

    def _top(self, invocation: commands.GitInvocation) -> str | None:
        if invocation.work_tree:
            return repository.find_top(invocation.work_tree)
        if invocation.git_dir:
            git_dir = invocation.git_dir
            return repository.find_top(os.path.dirname(git_dir.rstrip("/")) if os.path.basename(git_dir.rstrip("/")) == ".git" else git_dir)
        return repository.find_top(invocation.cwd) if invocation.cwd else None

    def _protected_folder(self, top: str) -> str | None:
        real = os.path.realpath(top)
        for folder in self._folders:
            if real == folder or real.startswith(folder.rstrip("/") + "/") or folder.startswith(real.rstrip("/") + "/"):
                return folder
        return None

    def _facts(self, top: str) -> dict[str, Any]:
        """``repository`` facts known without scanning: HEAD, branch, root commits, and why it is protected."""
        try:
            facts = dict(repository.facts(top))
        except repository.RepositoryError as exc:
            log.info("cannot read repository %s: %s", top, exc)
            facts = {"head": None, "branch": repository.head_branch(top), "root_commits": []}
        reasons: list[str] = []
        folder = self._protected_folder(top)
        if folder is not None:
            reasons.append("folder")
        copy_of = next((self._roots[r] for r in facts.get("root_commits") or [] if r in self._roots), None)
        if copy_of is not None and os.path.realpath(copy_of) != os.path.realpath(top):
            reasons.append("root_commit")
        else:
            copy_of = None
        return facts | {"path": top, "protected": bool(reasons), "reasons": reasons, "protected_folder": folder, "copy_of": copy_of}

    def _remember_roots(self, top: str) -> None:
        if top in self._roots.values() and time.monotonic() - self._checked.get(top, -COPY_RECHECK_S) < COPY_RECHECK_S:
            return
        self._checked[top] = time.monotonic()
        try:
            roots = repository.facts(top).get("root_commits") or []
        except repository.RepositoryError:
            return
        for root in roots:
            if len(self._roots) < 4 * MAX_PROTECTED_REPOS:
                self._roots[root] = top

    def _learn_protected(self) -> None:
        """The root commits of the repositories in and just under the protected folders."""
        found = 0
        for folder in self._folders:
            for top in _repositories(folder, PROTECTED_SCAN_DEPTH):
                if self.stopping or found >= MAX_PROTECTED_REPOS:
                    return
                found += 1
                self._remember_roots(top)


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,31}://)[^/\s@]*@")
_SECRET_OPTION = re.compile(r"(?i)((?:^|\s)(?:-u|--user|--proxy-user|--password|--passwd|--http-password|--ftp-password)[\s=]+)\S+")
_SECRET_HEADER = re.compile(r"(?i)((?:authorization|private-token|x-api-key|cookie):\s*)[^'\"]+")
SCRUBBED = "***"


def scrub_cmdline(cmdline: str) -> str:
    """A command line without the secrets egress commands carry: URL user names and passwords
    (``https://jdoe:token@host``), ``-u user:password`` style options, and authorization headers."""
    cmdline = _URL_USERINFO.sub(r"\1", cmdline)
    cmdline = _SECRET_OPTION.sub(rf"\1{SCRUBBED}", cmdline)
    return _SECRET_HEADER.sub(rf"\1{SCRUBBED}", cmdline)


def scrub_process(process: dict[str, Any] | None) -> dict[str, Any] | None:
    """``process`` with every command line (its own and its parents') scrubbed."""
    if process is None:
        return None
    def clean(entry: dict[str, Any]) -> dict[str, Any]:
        cmdline = entry.get("cmdline")
        return entry | {"cmdline": scrub_cmdline(cmdline)} if isinstance(cmdline, str) else entry
    return clean(process) | {"parents": [clean(p) for p in process.get("parents") or []]}


def _parse(url: str, *, cwd: str | None = None, remote: str | None = None) -> Destination | None:
    """``remotes.parse_git_url``, None for what is no URL (an agent must not fail on a user's typo)."""
    try:
        return remotes.parse_git_url(url, cwd=cwd, remote=remote)
    except ValueError:
        return None


def _url_like(remote: str) -> bool:
    """A ``git push`` target that is a URL or a path rather than a remote's name."""
    return "/" in remote or ":" in remote or remote in (".", "..")


def _cwd(pid: Any) -> str | None:
    if not isinstance(pid, int):
        return None
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def _repositories(folder: str, depth: int) -> list[str]:
    """Repository tops at ``folder`` and up to ``depth`` levels below it (links not followed)."""
    found: list[str] = []
    level = [folder]
    for _ in range(depth + 1):
        below: list[str] = []
        for path in level:
            if os.path.exists(os.path.join(path, ".git")):
                found.append(path)
                continue
            try:
                with os.scandir(path) as entries:
                    below.extend(e.path for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
            except OSError:
                continue
            if len(found) + len(below) > 4 * MAX_PROTECTED_REPOS:
                break
        level = sorted(below)[: 4 * MAX_PROTECTED_REPOS]
    return found
