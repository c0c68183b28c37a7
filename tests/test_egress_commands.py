"""Egress argv parsing: git commands, the processes git 2.39 runs to carry a push, upload tools, patterns.

The forms git really runs are taken from a real git here: a recording exec path (GIT_EXEC_PATH) and a
recording ``ssh`` log the argv git gives ``git-receive-pack``, ``git-remote-http(s)`` and ssh, and the
argv of the process that started them (the ``/bin/sh -c`` git uses for local pushes).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from agent.egress.argv import MAX_ARGS
from agent.egress.commands import (
    CloneIntent,
    PushIntent,
    RemoteChange,
    clone_intent,
    git_invocation,
    push_intent,
    push_transport,
    remote_change,
)
from agent.egress.remotes import Destination, parse_git_url, parse_url, remote_allowed, strip_credentials, validate_pattern
from agent.egress.uploads import upload_intent
from tests.git_remotes import git_env, make_bare, make_repo, ssh_stand_in

TOOLS = ("scp", "sftp", "rsync", "curl", "wget", "rclone")


def dest(url: str) -> dict[str, object]:
    d = parse_git_url(url, cwd="/home/dev/src").to_dict()
    return {k: d[k] for k in ("transport", "host", "port", "path", "url")}


# --- URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "transport", "host", "port", "path", "shown"),
    [
        ("https://user:tok@Git.Example.com:8443/a/b.git", "https", "git.example.com", 8443, "/a/b.git", "https://Git.Example.com:8443/a/b.git"),
        ("https://ghp_secret@github.com/team/app.git?access_token=x#frag", "https", "github.com", None, "/team/app.git", "https://github.com/team/app.git"),
        ("http://h/x", "http", "h", None, "/x", "http://h/x"),
        ("ssh://u@h:22/p", "ssh", "h", 22, "/p", "ssh://h:22/p"),
        ("git+ssh://u@h/p.git", "ssh", "h", None, "/p.git", "git+ssh://h/p.git"),
        ("ssh://h/~u/x.git", "ssh", "h", None, "~u/x.git", "ssh://h/~u/x.git"),
        ("git@github.com:team/app.git", "ssh", "github.com", None, "team/app.git", "github.com:team/app.git"),
        ("u:pw@h:path", "ssh", "h", None, "path", "h:path"),
        ("[::1]:repo.git", "ssh", "::1", None, "repo.git", "[::1]:repo.git"),
        ("u@[fe80::1]:/srv/r", "ssh", "fe80::1", None, "/srv/r", "[fe80::1]:/srv/r"),
        ("ssh://[::1]:2222/r", "ssh", "::1", 2222, "/r", "ssh://[::1]:2222/r"),
        ("git://h/x.git", "git", "h", None, "/x.git", "git://h/x.git"),
        ("file:///srv/git/x.git", "file", None, None, "/srv/git/x.git", "file:///srv/git/x.git"),
        ("file://localhost/srv/x", "file", None, None, "/srv/x", "file://localhost/srv/x"),
        ("/srv/git/../git/x.git", "local", None, None, "/srv/git/x.git", "/srv/git/x.git"),
        ("../bare.git", "local", None, None, "/home/dev/bare.git", "/home/dev/bare.git"),
        ("sub/dir:x", "local", None, None, "/home/dev/src/sub/dir:x", "/home/dev/src/sub/dir:x"),
        ("https::u:p@h/x", "https", "h", None, "/x", "https://h/x"),
        ("gcrypt::rsync://u@h/x", "gcrypt", "h", None, "/x", "gcrypt::rsync://h/x"),
    ],
)
def test_git_urls(url: str, transport: str, host: str | None, port: int | None, path: str, shown: str) -> None:
    assert dest(url) == {"transport": transport, "host": host, "port": port, "path": path, "url": shown}


@pytest.mark.parametrize("url", ["", "ssh://h:99999/x", "ssh://h:22a/x", "https://[::1/x", "https:///x", "h\x00:x", "a\nb", "x" * 9000])
def test_unreadable_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_git_url(url)


def test_helper_nesting_is_one_level_and_bounded() -> None:
    deep = "a::" * 2000 + "x"
    assert strip_credentials(deep).startswith("a::a::")
    assert parse_git_url("a::b::c").transport == "a"
    with pytest.raises(ValueError):
        parse_git_url("a::" * 3000)


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        ("https://user:pass@h/x", "https://h/x"),
        ("https://tok@h:443/x?private_token=1", "https://h:443/x"),
        ("ftp://u:p@h", "ftp://h"),
        ("git@h:x", "h:x"),
        ("/local/path", "/local/path"),
        ("gcrypt::https://t@h/x", "gcrypt::https://h/x"),
        ("https://a@b@h/x", "https://h/x"),
    ],
)
def test_strip_credentials(url: str, stripped: str) -> None:
    assert strip_credentials(url) == stripped


def test_upload_urls_default_to_http() -> None:
    d = parse_url("uploads.example.com:8080/in", tool="curl", default_scheme="http")
    assert (d.transport, d.host, d.port, d.path) == ("http", "uploads.example.com", 8080, "/in")


# --- patterns -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "pattern", "allowed"),
    [
        ("git@GitHub.com:Team/app.git", "github.com/**", True),
        ("git@github.com:Team/app.git", "github.com/Team/*", True),
        ("git@github.com:Team/app.git", "github.com/team/*", False),
        ("git@github.com:Team/sub/app.git", "github.com/Team/*", False),
        ("git@github.com:Team/sub/app.git", "github.com/Team/**", True),
        ("https://git.customer.com/team/app", "git.customer.com/team/app.git", True),
        ("https://git.customer.com/team/app.git/", "git.customer.com/team/app", True),
        ("https://a.b.customer.com/team/app", "*.customer.com/team/*", True),
        ("https://customer.com/team/app", "*.customer.com/team/*", False),
        ("https://evil.com/customer.com/team/app", "*.customer.com/team/*", False),
        ("ssh://git.customer.com:2222/app", "git.customer.com:2222/app", True),
        ("ssh://git.customer.com:2200/app", "git.customer.com:2222/app", False),
        ("git.customer.com:app", "git.customer.com:22/app", True),
        ("https://git.customer.com/app", "git.customer.com:443/app", True),
        ("https://git.customer.com:8443/app", "git.customer.com/app", True),
        ("/srv/git/app.git", "/srv/git/**", True),
        ("/srv/git", "/srv/git/**", True),
        ("/srv/gitx/app", "/srv/git/**", False),
        ("file:///srv/git/app.git", "/srv/*/app", True),
        ("/srv/git/app.git", "localhost/srv/git/**", False),
        ("ssh://h/srv/git/app", "/srv/git/**", False),
        ("ssh://[::1]:22/r", "[::1]/r", True),
    ],
)
def test_remote_allowed(url: str, pattern: str, allowed: bool) -> None:
    d = parse_git_url(url).to_dict()
    assert remote_allowed(d, [pattern]) == (pattern if allowed else None)


def test_remote_allowed_first_match_and_invalid_patterns_skipped() -> None:
    d = parse_git_url("https://h/a/b").to_dict()
    assert remote_allowed(d, ["", "h", "x/**", "h/a/*", "h/**"]) == "h/a/*"
    assert remote_allowed({"host": "h", "path": None}, ["h/x"]) is None
    assert remote_allowed({"host": "h", "path": None}, ["h/**"]) == "h/**"
    assert remote_allowed({"host": "h", "path": 5}, ["h/**"]) is None
    assert remote_allowed({"host": ["h"], "path": "/x"}, ["h/**"]) is None
    assert remote_allowed({"host": "h", "port": True, "path": "/x", "transport": "https"}, ["h:443/x"]) == "h:443/x"


@pytest.mark.parametrize(
    ("pattern", "normal"),
    [
        ("Git.Customer.COM/Team/App.git", "git.customer.com/Team/App"),
        ("h:2222/a//b/", "h:2222/a/b"),
        ("/srv//git/./x/", "/srv/git/x"),
        ("h/**", "h/**"),
        ("h/*.git", "h/*.git"),
        ("[::1]:22/r", "[::1]:22/r"),
    ],
)
def test_validate_pattern_normalises(pattern: str, normal: str) -> None:
    assert validate_pattern(pattern) == normal


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty"),
        ("h/a b", "whitespace"),
        (" h/x", "whitespace"),
        ("h/\x00", "control"),
        ("h/" + "a" * 520, "longer than 512"),
        ("git.customer.com", "no path part"),
        ("https://h/x", "without a scheme"),
        ("h:99999/x", "bad port"),
        ("h:x/y", "bad port"),
        ("u@h/x", "bad host"),
        (":22/x", "bad host"),
    ],
)
def test_validate_pattern_refuses(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_pattern(pattern)


# --- git command lines ----------------------------------------------------------------------------


def test_git_global_options() -> None:
    inv = git_invocation(["/usr/bin/git", "-C", "sub", "-C", "../other", "-c", "remote.origin.pushurl=x", "--no-pager", "-P", "push"], "/w")
    assert inv is not None
    assert (inv.subcommand, inv.cwd, inv.config) == ("push", "/w/other", ("remote.origin.pushurl=x",))
    inv = git_invocation(["git", "--git-dir=.git", "--work-tree", "/wt", "-C", "", "--exec-path=/x", "--no-replace-objects", "remote", "-v"], "/w")
    assert inv is not None
    assert (inv.subcommand, inv.args, inv.git_dir, inv.work_tree, inv.cwd) == ("remote", ("-v",), "/w/.git", "/wt", "/w")
    inv = git_invocation(["git", "-C", "/r", "--bare", "push"], None)
    assert inv is not None and inv.git_dir == "/r"
    dashed = git_invocation(["/usr/lib/git-core/git-push", "origin"], "/w")
    assert dashed is not None and (dashed.subcommand, dashed.args) == ("push", ("origin",))


@pytest.mark.parametrize(
    "argv",
    [["git"], ["git", "--version"], ["git", "-C"], ["git", "--exec-path"], ["git", "-h"], ["gitk", "push"], ["git", "--list-cmds=main"], []],
)
def test_git_invocation_none(argv: list[str]) -> None:
    assert git_invocation(argv, "/w") is None


@pytest.mark.parametrize(
    ("args", "intent"),
    [
        (["push"], PushIntent(None, (), ())),
        (["push", "origin"], PushIntent("origin", (), ())),
        (["push", "-fu", "origin", "main", "HEAD:refs/heads/x"], PushIntent("origin", ("main", "HEAD:refs/heads/x"), ("--force", "--set-upstream"))),
        (["push", "-o", "ci.skip", "--push-option", "a", "--push-option=b", "-oc", "evil", "x"], PushIntent("evil", ("x",), ())),
        (["push", "--repo=https://h/x", "--all"], PushIntent("https://h/x", (), ("--all",))),
        (["push", "--repo", "up", "--mirror"], PushIntent("up", (), ("--mirror",))),
        (["push", "--receive-pack", "/opt/git-receive-pack", "--exec=/x", "o", "main"], PushIntent("o", ("main",), ())),
        (["push", "--recurse-submodules", "check", "o", "--tags"], PushIntent("o", (), ("--tags",))),
        (["push", "--force-with-lease=main:abc", "--signed=if-asked", "o", "main"], PushIntent("o", ("main",), ("--force-with-lease",))),
        (["push", "-d", "o", "old"], PushIntent("o", ("old",), ("--delete",))),
        (["push", "--rece", "/x", "o"], PushIntent("o", (), ())),
        (["push", "--", "-weird-remote", "main"], PushIntent("-weird-remote", ("main",), ())),
    ],
)
def test_push_intent(args: list[str], intent: PushIntent) -> None:
    inv = git_invocation(["git", *args], "/w")
    assert inv is not None
    assert push_intent(inv) == intent


def test_push_refs_bounded() -> None:
    inv = git_invocation(["git", "push", "o", *[f"r{i:03}" + "x" * 1100 for i in range(150)]], "/w")
    assert inv is not None
    intent = push_intent(inv)
    assert intent is not None and len(intent.refspecs) == 100 and all(len(r) == 1024 for r in intent.refspecs)
    fetch = git_invocation(["git", "fetch", "o"], "/w")
    assert fetch is not None and push_intent(fetch) is None


@pytest.mark.parametrize(
    ("args", "change"),
    [
        (["remote", "add", "evil", "https://u:p@h/x"], RemoteChange("add", "evil", "https://u:p@h/x")),
        (["remote", "-v", "add", "-f", "-t", "main", "-m", "main", "--mirror=push", "e", "git@h:x"], RemoteChange("add", "e", "git@h:x")),
        (["remote", "add", "--track=main", "--no-tags", "e", "/srv/x"], RemoteChange("add", "e", "/srv/x")),
        (["remote", "set-url", "--push", "origin", "ssh://h/x"], RemoteChange("set-url", "origin", "ssh://h/x")),
        (["remote", "set-url", "--add", "origin", "new", "old"], RemoteChange("set-url", "origin", "new")),
        (["remote", "set-url", "--delete", "origin", "x"], None),
        (["remote", "remove", "origin"], None),
        (["remote", "add", "only-name"], None),
        (["config", "remote.origin.pushurl", "https://h/x"], RemoteChange("set-url", "origin", "https://h/x")),
        (["config", "--add", "Remote.o.URL", "/srv/x"], RemoteChange("set-url", "o", "/srv/x")),
        (["config", "--global", "remote.o.url", "/srv/x"], None),
        (["config", "user.name", "x"], None),
        (["config", "--get", "remote.o.url"], None),
    ],
)
def test_remote_change(args: list[str], change: RemoteChange | None) -> None:
    inv = git_invocation(["git", *args], "/w")
    assert inv is not None
    assert remote_change(inv) == change


@pytest.mark.parametrize(
    ("args", "intent"),
    [
        (["clone", "https://h/team/app.git"], CloneIntent("https://h/team/app.git", "/w/app")),
        (["clone", "--depth", "1", "-b", "main", "-o", "up", "--template=/t", "git@h:team/app.git/", "copy"], CloneIntent("git@h:team/app.git/", "/w/copy")),
        (["clone", "/srv/app/.git"], CloneIntent("/srv/app/.git", "/w/app")),
        (["clone", "--bare", "../src"], CloneIntent("../src", "/w/src.git")),
        (["clone", "--mirror", "h:x.git", "/abs/m"], CloneIntent("h:x.git", "/abs/m")),
        (["clone", "-c", "core.x=1", "--reference", "/r", "--filter", "blob:none", "src", "a/b"], CloneIntent("src", "/w/a/b")),
        (["clone", "/"], None),
        (["clone"], None),
    ],
)
def test_clone_intent(args: list[str], intent: CloneIntent | None) -> None:
    inv = git_invocation(["git", *args], "/w")
    assert inv is not None
    assert clone_intent(inv) == intent


# --- processes that carry a push ------------------------------------------------------------------


def transport(argv: list[str], cwd: str | None = "/w") -> tuple[str, str, str | None, int | None, str | None, str | None] | None:
    start = push_transport(argv, cwd)
    if start is None:
        return None
    d = start.destination
    return start.kind, d.transport, d.host, d.port, d.path, d.remote


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # what git 2.39 runs (see test_forms_git_really_runs)
        (["/usr/lib/git-core/git-remote-http", "http://u:p@127.0.0.1:1/x", "http://u:p@127.0.0.1:1/x"], ("remote-helper", "http", "127.0.0.1", 1, "/x", None)),
        (["git-remote-https", "origin", "https://h/x.git"], ("remote-helper", "https", "h", None, "/x.git", "origin")),
        (["git-remote-ftps", "ftps://h/x"], ("remote-helper", "ftps", "h", None, "/x", None)),
        (["git-remote-gcrypt", "backup", "rsync://h/x"], ("remote-helper", "gcrypt", "h", None, "/x", "backup")),
        (["/bin/sh", "-c", "git-receive-pack '/srv/bare.git'", "git-receive-pack '/srv/bare.git'"], ("receive-pack", "local", None, None, "/srv/bare.git", None)),
        (["/bin/sh", "-c", "git-receive-pack '../it'\\''s.git'", "x"], ("receive-pack", "local", None, None, "/w/it's.git", None)),
        (["git-receive-pack", "../bare.git"], ("receive-pack", "local", None, None, "/w/bare.git", None)),
        (["/usr/bin/git", "receive-pack", "/srv/b"], ("receive-pack", "local", None, None, "/srv/b", None)),
        (["ssh", "-o", "SendEnv=GIT_PROTOCOL", "-p", "2222", "u@Host", "git-receive-pack '/srv/bare.git'"], ("receive-pack", "ssh", "host", 2222, "/srv/bare.git", None)),
        (["ssh", "-p2200", "-oPort=1", "h", "git-receive-pack 'x.git'"], ("receive-pack", "ssh", "h", 1, "/x.git", None)),
        (["ssh", "h", "git-receive-pack '~u/x.git'"], ("receive-pack", "ssh", "h", None, "~u/x.git", None)),
        (["ssh", "::1", "git receive-pack 'x.git'"], ("receive-pack", "ssh", "::1", None, "x.git", None)),
        (["ssh", "-i", "key", "-l", "git", "h", "git-receive-pack", "'/a b.git'"], ("receive-pack", "ssh", "h", None, "/a b.git", None)),
        (["/bin/sh", "/usr/local/bin/ssh", "-p", "22", "h", "git-receive-pack '/r'"], ("receive-pack", "ssh", "h", 22, "/r", None)),
        # GIT_SSH_COMMAND with arguments: git runs it through sh, which then starts ssh itself (the pair strace shows)
        (["/bin/sh", "-c", 'ssh -o BatchMode=yes "$@"', "ssh -o BatchMode=yes", "-p", "2222", "u@host", "git-receive-pack '/srv/b.git'"], None),
        (["/usr/bin/ssh", "-o", "BatchMode=yes", "-p", "2222", "u@host", "git-receive-pack '/srv/b.git'"], ("receive-pack", "ssh", "host", 2222, "/srv/b.git", None)),
        # fetches, probes and servers are not pushes
        (["ssh", "-G", "-p", "22", "h"], None),
        (["ssh", "-o", "SendEnv=GIT_PROTOCOL", "h", "git-upload-pack '/r'"], None),
        (["git-upload-pack", "/r"], None),
        (["/bin/sh", "-c", "git-upload-pack '/r'"], None),
        (["git", "receive-pack", "--stateless-rpc", "."], None),
        (["git-receive-pack", "--stateless-rpc", "/srv/r"], None),
        (["git-remote-ext", "o", "ext::sh -c x"], None),
        (["git-remote-fd", "o", "fd::3"], None),
        (["/bin/sh", "-c", "rm -rf /; git-receive-pack '/r'"], None),
        (["/bin/sh", "-c", "git-receive-pack 'unterminated"], None),
        (["ssh", "h"], None),
        (["git-remote-https"], None),
        (["git-remote-https", "o", "https://h:bad/x"], None),
    ],
)
def test_push_transport(argv: list[str], expected: tuple[object, ...] | None) -> None:
    assert transport(argv, "/w" if "../" not in " ".join(argv) else "/w/src") == expected


def test_remote_helper_url_has_no_credentials() -> None:
    start = push_transport(["git-remote-https", "https://user:ghp_token@h/x", "https://user:ghp_token@h/x"], "/w")
    assert start is not None and "ghp_token" not in start.destination.url and "user" not in start.destination.url


def test_relative_receive_pack_without_cwd() -> None:
    assert push_transport(["git-receive-pack", "rel.git"], None) is None


RECORDER = """#!{python}
import json, os, sys
with open({log!r}, "a") as out:
    with open(f"/proc/{{os.getppid()}}/cmdline", "rb") as parent:
        parent_argv = [p.decode() for p in parent.read().split(b"\\0")[:-1]]
    out.write(json.dumps({{"argv": sys.argv, "parent": parent_argv, "cwd": os.getcwd()}}) + "\\n")
os.execv({real!r}, [{name!r}, *sys.argv[1:]])
"""


def recording_exec_path(folder: Path, log: Path, names: tuple[str, ...]) -> Path:
    """A copy of git's exec path (symlinks) where ``names`` log their argv, then run the real program.

    A script started through its ``#!`` line sees its own path as argv[0] (the kernel puts the path
    the caller resolved there), so argv[0] is compared by base name."""
    real_dir = Path(subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip())
    folder.mkdir()
    for entry in real_dir.iterdir():
        target = folder / entry.name
        if entry.name in names:
            target.write_text(RECORDER.format(python=sys.executable, log=str(log), real=str(entry), name=entry.name))
            target.chmod(0o755)
        else:
            target.symlink_to(entry)
    return folder


def records(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_forms_git_really_runs(tmp_path: Path) -> None:
    """Pushes over a local path, file://, ssh and http with the real git: the argv it gives each
    carrying process (and the ``sh -c`` around a local receive-pack) read as the right destination."""
    log = tmp_path / "log.jsonl"
    exec_path = recording_exec_path(tmp_path / "exec", log, ("git-receive-pack", "git-remote-http", "git-remote-https"))
    repo = make_repo(tmp_path / "src", {"a.txt": "hello"})
    bare = make_bare(tmp_path / "bare.git")
    env = git_env({"GIT_EXEC_PATH": str(exec_path)})

    def push(url: str, ref: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "push", "-q", url, ref], cwd=repo, env=env | (extra or {}), capture_output=True, text=True, timeout=30, check=False)

    assert push(str(bare), "main:local").returncode == 0
    assert push(f"file://{bare}", "main:file").returncode == 0
    assert push("../bare.git", "main:relative").returncode == 0
    local = records(log)
    assert len(local) == 3
    for record in local:
        argv, parent = record["argv"], record["parent"]
        assert isinstance(argv, list) and isinstance(parent, list)
        assert Path(str(argv[0])).name == "git-receive-pack"
        assert parent[0] in ("/bin/sh", "sh") and parent[1] == "-c" and parent[2].startswith("git-receive-pack '")
        for form in (argv, parent):
            start = push_transport(form, str(record["cwd"]))
            assert start is not None and start.kind == "receive-pack"
            assert (start.destination.transport, start.destination.host, start.destination.path) == ("local", None, str(bare))
    assert local[0]["cwd"] == str(repo)

    # ssh: a recording stand-in named ssh, as GIT_SSH_COMMAND; git gives OpenSSH options (-p) with the ssh variant
    stand_in = ssh_stand_in(tmp_path / "standin")
    ssh_log = tmp_path / "ssh.jsonl"
    ssh = tmp_path / "bin" / "ssh"
    ssh.parent.mkdir()
    ssh.write_text(RECORDER.format(python=sys.executable, log=str(ssh_log), real=str(stand_in), name="ssh"))
    ssh.chmod(0o755)
    ssh_env = {"GIT_SSH_COMMAND": str(ssh), "GIT_SSH_VARIANT": "ssh"}
    assert push(f"ssh://dev@Build.Example:2222{bare}", "main:ssh", ssh_env).returncode == 0
    assert push(f"dev@build.example:{bare}", "main:scp-like", ssh_env).returncode == 0
    seen = [push_transport(record["argv"], "/") for record in records(ssh_log)]  # type: ignore[arg-type]
    got = [(s.destination.host, s.destination.port, s.destination.path, s.destination.url) for s in seen if s is not None]
    assert got == [("build.example", 2222, str(bare), f"ssh://Build.Example:2222{bare}"), ("build.example", None, str(bare), f"ssh://build.example{bare}")]

    # http(s): git runs `git remote-http`, which execs git-remote-http with the same arguments
    log.unlink()
    for scheme in ("http", "https"):
        push(f"{scheme}://dev:ghp_secret@127.0.0.1:1/team/app.git", "main")
    helpers = records(log)
    assert [Path(str(r["argv"][0])).name for r in helpers] == ["git-remote-http", "git-remote-https"]  # type: ignore[index]
    for record, scheme in zip(helpers, ("http", "https")):
        start = push_transport(record["argv"], "/")  # type: ignore[arg-type]
        assert start is not None and start.kind == "remote-helper"
        assert start.destination.to_dict() == {
            "tool": "git", "transport": scheme, "host": "127.0.0.1", "port": 1, "path": "/team/app.git",
            "url": f"{scheme}://127.0.0.1:1/team/app.git", "remote": None,
        }  # fmt: skip


# --- upload tools ---------------------------------------------------------------------------------


def upload(argv: list[str], cwd: str | None = "/w") -> tuple[tuple[str, ...], str, str | None, int | None, str | None] | None:
    intent = upload_intent(argv, cwd, tools=TOOLS)
    if intent is None:
        return None
    d = intent.destination
    assert d.tool == intent.tool == Path(argv[0]).name
    return intent.files, d.transport, d.host, d.port, d.path


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["scp", "a.txt", "/etc/b", "u@H:/dst/"], (("/w/a.txt", "/etc/b"), "scp", "h", None, "/dst/")),
        (["/usr/bin/scp", "-P", "2222", "-i", "key", "-o", "X=y", "-rq", "dir", "h:"], (("/w/dir",), "scp", "h", 2222, "")),
        (["scp", "-P2222", "-S", "/bin/ssh", "f", "scp://u@h:2200/x"], (("/w/f",), "scp", "h", 2200, "/x")),
        (["scp", "./a:b", "h:x"], (("/w/a:b",), "scp", "h", None, "x")),
        (["scp", "-3", "h1:a", "h2:b"], None),
        (["scp", "h1:a", "h2:b"], None),
        (["scp", "h:a", "."], None),
        (["scp", "a", "b"], None),
        (["scp", "-P", "99999", "a", "h:b"], None),
        (["rsync", "-av", "--exclude", "*.o", "-e", "ssh -p 2200", "src/", "u@h:/bk"], (("/w/src",), "ssh", "h", 2200, "/bk")),
        (["rsync", "-a", "--port=8873", "src", "h::mod/x"], (("/w/src",), "rsync", "h", 8873, "/mod/x")),
        (["rsync", "-a", "src", "rsync://h:1873/mod"], (("/w/src",), "rsync", "h", 1873, "/mod")),
        (["rsync", "-a", "h:/x", "local"], None),
        (["rsync", "-a", "a", "b"], None),
        (["curl", "-T", "{a,b}.txt", "https://u:p@h/up/?tok=1"], (("/w/a.txt", "/w/b.txt"), "https", "h", None, "/up/")),
        (["curl", "-sSF", "f=@x.zip;type=application/zip", "-F", 'g=<"y;z"', "--url", "h.com/x"], (("/w/x.zip", "/w/y;z"), "http", "h.com", None, "/x")),
        (["curl", "-d", "@d.json", "--data-binary", "@/e", "--data-raw", "@raw", "--json", "@j", "h"], (("/w/d.json", "/e", "/w/j"), "http", "h", None, None)),
        (["curl", "--data-urlencode", "n@file", "--data-urlencode", "n=@notfile", "-H", "X: y", "https://h"], (("/w/file",), "https", "h", None, None)),
        (["curl", "--upload-file", "f", "-o", "out", "ftp://h/in/"], (("/w/f",), "ftp", "h", None, "/in/")),
        (["curl", "-T", "-", "https://h/"], None),
        (["curl", "-o", "f", "https://h/f"], None),
        (["curl", "-T", "f"], None),
        (["wget", "--post-file=x", "http://h/"], (("/w/x",), "http", "h", None, "/")),
        (["wget", "-q", "-O", "-", "--method=PUT", "--body-file", "/y", "h/in"], (("/y",), "http", "h", None, "/in")),
        (["wget", "http://h/"], None),
        (["rclone", "copy", "--transfers", "4", "dir", "GDrive:bk/x"], (("/w/dir",), "rclone", "gdrive", None, "bk/x")),
        (["rclone", "sync", "-P", "./a:b", "s3:bucket"], (("/w/a:b",), "rclone", "s3", None, "bucket")),
        (["rclone", "copy", "f", ":s3,provider=AWS:bucket/x"], (("/w/f",), "rclone", ":s3", None, "bucket/x")),
        (["rclone", "copy", "remote:x", "/local"], None),
        (["rclone", "ls", "remote:x"], None),
        (["nc", "h", "80"], None),
    ],
)
def test_upload_intent(argv: list[str], expected: tuple[object, ...] | None) -> None:
    assert upload(argv) == expected


def test_upload_tools_limit() -> None:
    assert upload_intent(["scp", "a", "h:b"], "/w", tools=("rsync",)) is None
    assert upload_intent(["scp", "a", "h:b"], None, tools=TOOLS) is None


def test_upload_url_credentials_removed() -> None:
    intent = upload_intent(["curl", "-T", "f", "https://user:s3cret@h/x?sig=abc"], "/w", tools=TOOLS)
    assert intent is not None and intent.destination.url == "https://h/x"


def test_sftp_batch_file(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.write_text("# upload\nlcd sub\nput -p a.txt\n-put /abs/b\n@mput c d\nreput e remote/e\nget x\nls\nput 'unterminated\n")
    intent = upload_intent(["sftp", "-P", "2222", "-b", "batch", "u@h:/in"], str(tmp_path), tools=TOOLS)
    assert intent is not None
    sub = tmp_path / "sub"
    assert intent.files == (str(sub / "a.txt"), "/abs/b", str(sub / "c"), str(sub / "d"), str(sub / "e"))
    assert (intent.destination.transport, intent.destination.host, intent.destination.port, intent.destination.path) == ("sftp", "h", 2222, "/in")
    via_url = upload_intent(["sftp", "-b", str(batch), "sftp://u@h:2200/x"], "/", tools=TOOLS)
    assert via_url is not None and via_url.destination.port == 2200
    assert upload_intent(["sftp", "-b", "-", "h"], str(tmp_path), tools=TOOLS) is None
    assert upload_intent(["sftp", "h"], str(tmp_path), tools=TOOLS) is None
    assert upload_intent(["sftp", "-b", "missing", "h"], str(tmp_path), tools=TOOLS) is None


def test_sftp_batch_read_is_bounded(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.write_text("put first\n" + "#" * (70 << 10) + "\nput beyond\n")
    intent = upload_intent(["sftp", "-b", str(batch), "h"], str(tmp_path), tools=TOOLS)
    assert intent is not None and intent.files == (str(tmp_path / "first"),)


# --- hostile argv ---------------------------------------------------------------------------------


def test_oversized_argv_is_not_read() -> None:
    big = ["curl", *(["-T", "f"] * (MAX_ARGS // 2)), "https://h/"]
    assert upload_intent(big, "/w", tools=TOOLS) is None
    assert git_invocation(["git", "push", "x" * (300 << 10)], "/w") is None
    assert push_transport(["ssh", "h", "git-receive-pack '" + "a" * (300 << 10) + "'"], "/w") is None


def test_random_argv_never_raises() -> None:
    rng = random.Random(17)
    atoms = [
        "git", "push", "remote", "add", "set-url", "clone", "config", "-C", "-c", "--git-dir", "--", "-", "-o", "-T", "-F", "-d", "-e", "-P",
        "-b", "-3", "ssh", "sh", "-c", "git-receive-pack", "git-remote-https", "scp", "sftp", "rsync", "curl", "wget", "rclone", "copy",
        "h:", "h::", "::", ":", "@", "[", "]", "[::1]:", "://", "https://", "file://", "ssh://u@h:", "{", "}", "{a,", "=@", "@", "<", "'",
        '"', "\\", "\x00", "\n", "~", "..", "/", "//", "é", "\udcff", "*", "a=b", "remote.x.url", "sftp://", "rsync://", ":s3,", "9" * 30,
    ]  # fmt: skip
    for _ in range(3000):
        argv = ["".join(rng.choice(atoms) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(0, 12))]
        if rng.random() < 0.5:
            argv.insert(0, rng.choice(["git", "git-remote-http", "ssh", "/bin/sh", "git-receive-pack", *TOOLS]))
        cwd = rng.choice(["/w", None, "rel", ""])
        inv = git_invocation(argv, cwd)
        if inv is not None:
            push_intent(inv)
            remote_change(inv)
            clone_intent(inv)
        push_transport(argv, cwd)
        upload_intent(argv, cwd, tools=TOOLS)
        for arg in argv:
            strip_credentials(arg)
            remote_allowed({"host": arg or None, "port": None, "path": arg, "transport": "ssh"}, [arg, "h/**", "/**"])


def test_destination_dict_has_the_contract_fields() -> None:
    from agent.events import DESTINATION_FIELDS

    d = parse_git_url("https://h/x", remote="origin").to_dict()
    assert tuple(d) == DESTINATION_FIELDS
    assert isinstance(parse_git_url("/x"), Destination)


def test_relative_paths_need_a_folder() -> None:
    assert os.path.isabs(parse_git_url("x", cwd="/w").path or "")
    assert parse_git_url("x").path == "x"
