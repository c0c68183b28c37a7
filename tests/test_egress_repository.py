"""Repositories as the egress code reads them: real repositories made with git (worktrees, gitfiles,
empty, bare, hostile config), with git itself as the oracle for what the config says."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.egress.repository import (
    MAX_CONFIG,
    HeadReader,
    RepositoryError,
    facts,
    find_top,
    head_branch,
    privilege_prefix,
    push_remote_name,
    read_remotes,
    remote_push_urls,
    run_git,
)
from tests.git_remotes import commit, git, git_env, make_bare, make_repo


def test_find_top(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a/b/c.txt": "x"})
    assert find_top(str(repo / "a" / "b")) == str(repo)
    assert find_top(str(repo / "a" / "b" / "missing" / "..")) == str(repo)
    assert find_top(str(repo / ".git" / "refs" / "heads")) == str(repo)
    assert find_top(str(repo)) == str(repo)
    bare = make_bare(tmp_path / "bare.git")
    assert find_top(str(bare / "refs")) == str(bare)
    assert find_top(str(tmp_path / "nothing")) is None
    assert find_top("relative/path") is None
    assert find_top("") is None
    assert find_top("/a\x00b") is None


def test_find_top_is_bounded(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo", {"f": "x"})
    deep = "/".join(["d"] * 300)
    assert find_top(str(tmp_path / "repo" / deep)) is None  # 300 levels up is beyond MAX_LEVELS
    assert find_top(str(tmp_path / "repo" / "/".join(["d"] * 200))) == str(tmp_path / "repo")


def test_worktree_gitfile_and_submodule_style(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"f": "x"})
    git(repo, "remote", "add", "origin", "https://h/app.git")
    git(repo, "worktree", "add", "-q", "-b", "feature", str(tmp_path / "wt"))
    wt = tmp_path / "wt"
    assert (wt / ".git").is_file()
    assert find_top(str(wt)) == str(wt)
    assert head_branch(str(wt)) == "feature"
    assert head_branch(str(repo)) == "main"
    assert read_remotes(str(wt)) == {"origin": {"url": ["https://h/app.git"], "pushurl": []}}
    info = facts(str(wt))
    assert info["branch"] == "feature" and info["head"] == git(repo, "rev-parse", "HEAD").strip()
    files = dict(HeadReader(str(wt), max_files=10, max_bytes=1 << 20))
    assert files == {"f": b"x"}

    # a gitfile with a relative path, as submodules have
    moved = tmp_path / "separate"
    git(tmp_path, "init", "-q", "-b", "dev", "--separate-git-dir", str(moved), str(tmp_path / "sub"))
    (tmp_path / "sub" / ".git").write_text("gitdir: ../separate\n")
    assert find_top(str(tmp_path / "sub")) == str(tmp_path / "sub")
    assert head_branch(str(tmp_path / "sub")) == "dev"


def test_detached_and_unreadable_head(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"f": "x"})
    git(repo, "checkout", "-q", "--detach")
    assert head_branch(str(repo)) is None
    assert head_branch(str(tmp_path)) is None


def test_empty_repository(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    git(tmp_path, "init", "-q", "-b", "trunk", str(repo))
    assert facts(str(repo)) == {"path": str(repo), "head": None, "branch": "trunk", "root_commits": []}
    reader = HeadReader(str(repo), max_files=10, max_bytes=1 << 20)
    assert list(reader) == [] and (reader.status, reader.files, reader.bytes) == ("complete", 0, 0)


def test_root_commits(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"f": "x"})
    first = git(repo, "rev-list", "--max-parents=0", "HEAD").strip()
    commit(repo, {"g": "y"})
    assert facts(str(repo))["root_commits"] == [first]
    roots = {first}
    for i in range(5):  # unrelated histories merged in: six roots, four reported
        git(repo, "checkout", "-q", "--orphan", f"o{i}")
        git(repo, "rm", "-rq", "--cached", ".")
        roots.add(commit(repo, {f"o{i}": str(i)}))
        git(repo, "checkout", "-q", "-f", "main")
        git(repo, "merge", "-q", "--allow-unrelated-histories", "-m", "m", f"o{i}")
    found = facts(str(repo))["root_commits"]
    assert len(found) == 4 and set(found) <= roots


HOSTILE_CONFIG = r"""
[core]
	repositoryformatversion = 0
[remote "origin"]
	url = https://u:tok@h/app.git ; a comment
	URL = "  quoted # not a comment "
	pushurl = first\
second
	pushUrl = a\tb\\c\"d
	fetch
[remote "we\"ird\\name"]
	url = ssh://h/x
[Remote.Old]
	url = /srv/old
[remote "origin"]
	url = again # trailing
[remote "empty"]
	url =
[remote "evil"]
	url = x
[include]
	path = other.config
[url "https://mirror.example/"]
	insteadOf = https://h/
	pushInsteadOf = https://u:tok@h/
"""


def test_read_remotes_agrees_with_git(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"f": "x"})
    (repo / ".git" / "other.config").write_text('[remote "included"]\n\turl = https://included/x\n')
    with open(repo / ".git" / "config", "a") as handle:
        handle.write(HOSTILE_CONFIG)
    remotes = read_remotes(str(repo))
    assert "included" not in remotes  # includes are not followed
    for name in ("origin", 'we"ird\\name', "old", "empty", "evil"):
        assert name in remotes
        for key in ("url", "pushurl"):
            proc = subprocess.run(["git", "config", "--no-includes", "--get-all", f"remote.{name}.{key}"], cwd=repo, env=git_env(), capture_output=True, text=True, check=False)
            expected = proc.stdout.split("\n")[:-1] if proc.returncode == 0 else []
            assert remotes[name][key] == expected, (name, key)
    assert remotes["origin"]["pushurl"] == ["firstsecond", 'a\tb\\c"d']


@pytest.mark.parametrize("name", ["origin", "old", "evil", "none"])
def test_remote_push_urls_agree_with_git(tmp_path: Path, name: str) -> None:
    repo = make_repo(tmp_path / "repo", {"f": "x"})
    with open(repo / ".git" / "config", "a") as handle:
        handle.write(HOSTILE_CONFIG.replace("[include]\n\tpath = other.config\n", "").replace("\tfetch\n", ""))
    git(repo, "config", "--add", "url.ssh://pushes.example/.pushInsteadOf", "/srv/")
    git(repo, "config", "--add", "url.ssh://longer.example/.pushInsteadOf", "/srv/old")
    proc = subprocess.run(["git", "remote", "get-url", "--push", "--all", name], cwd=repo, env=git_env(), capture_output=True, text=True, check=False)
    expected = proc.stdout.split("\n")[:-1] if proc.returncode == 0 else []
    assert remote_push_urls(str(repo), name) == expected


def test_push_urls_without_pushurl_use_push_instead_of(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"f": "x"})
    git(repo, "remote", "add", "origin", "https://h/app.git")
    git(repo, "config", "url.https://mirror/.insteadOf", "https://h/")
    assert remote_push_urls(str(repo), "origin") == ["https://mirror/app.git"]
    git(repo, "config", "url.ssh://push-host/.pushInsteadOf", "https://h/")
    assert remote_push_urls(str(repo), "origin") == ["ssh://push-host/app.git"]
    assert remote_push_urls(str(tmp_path), "origin") == []


def test_push_remote_name_agrees_with_git(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"f": "x"})

    def git_says() -> str:
        return git(repo, "for-each-ref", "--format=%(push:remotename)", "refs/heads/main").strip() or "origin"  # git push's own default

    assert push_remote_name(str(repo)) == git_says() == "origin"
    for key, value in (("branch.main.remote", "up"), ("remote.pushDefault", "pd"), ("branch.main.pushRemote", "pr"), ("branch.main.pushRemote", "pr2")):
        git(repo, "config", "--add" if key == "branch.main.pushRemote" else "--replace-all", key, value)
        assert push_remote_name(str(repo)) == git_says() == value
    assert push_remote_name(str(repo), "other") == "pd"
    git(repo, "checkout", "-q", "--detach")
    assert push_remote_name(str(repo)) == "pd"


def test_config_bounds_and_bad_files(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"f": "x"})
    config = repo / ".git" / "config"
    text = config.read_text()
    config.write_text(text + '[remote "a"]\n\turl = early\n' + "#" * MAX_CONFIG + '\n[remote "b"]\n\turl = late\n')
    assert read_remotes(str(repo)) == {"a": {"url": ["early"], "pushurl": []}}
    config.write_text('[remote "a"]\n\turl = ok\n[remote "unclosed\n\turl = x\n')
    assert read_remotes(str(repo)) == {"a": {"url": ["ok"], "pushurl": []}}
    config.write_text('[remote "a"]\n\turl = "never closed\n\turl = x\n')
    assert read_remotes(str(repo)) == {}
    config.write_text('[remote "a"]\n\turl = ' + "x" * 9000 + "\n\turl = short\n")
    assert read_remotes(str(repo)) == {"a": {"url": ["short"], "pushurl": []}}
    config.write_bytes(b'[remote "a"]\n\turl = \xff\x00bin\n')
    assert read_remotes(str(repo))["a"]["url"] == ["\ufffd\x00bin"]
    config.write_text("".join(f'[remote "r{i}"]\n\turl = u\n' for i in range(1100)))
    assert len(read_remotes(str(repo))) == 1000


def test_run_git_is_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo", {"f": "x"})
    marker = tmp_path / "ran"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    git(repo, "config", "core.fsmonitor", str(hook))
    git(repo, "config", "core.hooksPath", str(tmp_path))
    (tmp_path / "post-index-change").symlink_to(hook)
    monkeypatch.setenv("GIT_DIR", "/nonexistent")
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.bare'='true'")
    assert run_git(str(repo), "status", "--porcelain") == b""
    assert not marker.exists()
    subprocess.run(["git", "status", "--porcelain"], cwd=repo, env=git_env(), capture_output=True, check=False, timeout=30)
    assert marker.exists()  # plain git runs the repository's programs
    assert run_git(str(repo), "rev-parse", "HEAD").strip() == git(repo, "rev-parse", "HEAD").strip().encode()
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = leaked\n")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(RepositoryError, match=r"failed \(1\)"):
        run_git(str(repo), "config", "--get", "user.name")


def test_run_git_reads_another_users_repository(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the repository to another user")
    repo = make_repo(tmp_path / "repo", {"f": "x"})
    for path in [repo, *repo.rglob("*")]:
        os.lchown(path, 65534, 65534)
    refused = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, env=git_env(), capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and "dubious ownership" in refused.stderr
    assert len(run_git(str(repo), "rev-parse", "HEAD").strip()) == 40


def test_run_git_errors(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"big": "x" * (2 << 20)})
    with pytest.raises(RepositoryError, match="wrote more than"):
        run_git(str(repo), "cat-file", "blob", "HEAD:big", max_output=1 << 20)
    with pytest.raises(RepositoryError, match=r"failed \(128\)"):
        run_git(str(repo), "cat-file", "blob", "HEAD:missing")
    with pytest.raises(RepositoryError, match="timed out"):
        run_git(str(repo), "cat-file", "blob", "HEAD:big", timeout=0)
    with pytest.raises(RepositoryError, match="not a git repository"):
        run_git(str(tmp_path), "rev-parse", "HEAD")


def test_git_runs_with_only_dac_read_search(tmp_path: Path) -> None:
    prefix = privilege_prefix()
    if not prefix:
        pytest.skip("the test process holds no capabilities or setpriv is missing")
    status = subprocess.run([*prefix, "cat", "/proc/self/status"], capture_output=True, text=True, check=True, timeout=10).stdout
    caps = {line.split(":")[0]: int(line.split()[1], 16) for line in status.splitlines() if line.startswith("Cap")}
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == 1 << 2
    assert "NoNewPrivs:\t1" in status
    assert privilege_prefix(0) == []
    no_setpcap = privilege_prefix(1 << 2)
    assert not any(arg.startswith("--bounding-set") for arg in no_setpcap) and "--inh-caps=-all,+dac_read_search" in no_setpcap
    assert "--ambient-caps=-all" in privilege_prefix(1 << 8)


def test_head_reader_reads_regular_files(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "repo",
        {"a.txt": "alpha", "dir/b.bin": bytes(range(256)), "line\nbreak é.txt": "odd name", "exe.sh": "#!/bin/sh\n", "empty": ""},
    )
    (repo / "link").symlink_to("a.txt")
    os.chmod(repo / "exe.sh", 0o755)
    git(repo, "add", "link", "exe.sh")
    sub_source = make_repo(tmp_path / "subsrc", {"s": "sub"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub_source), "vendor/sub")
    git(repo, "commit", "-qam", "more")
    with HeadReader(str(repo), max_files=100, max_bytes=1 << 20) as reader:
        files = dict(reader)
    assert files == {
        ".gitmodules": (repo / ".gitmodules").read_bytes(), "a.txt": b"alpha", "dir/b.bin": bytes(range(256)),
        "line\nbreak é.txt": b"odd name", "exe.sh": b"#!/bin/sh\n", "empty": b"",
    }  # fmt: skip
    assert reader.status == "complete" and reader.files == 6 and reader.bytes == sum(len(v) for v in files.values())


def test_head_reader_budgets(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "1" * 100, "b": "2" * 5000, "c": "3" * 100, "d": "4" * 100})
    reader = HeadReader(str(repo), max_files=100, max_bytes=1000)
    assert [name for name, _ in reader] == ["a", "c", "d"]
    assert (reader.status, reader.files, reader.bytes) == ("partial", 3, 300)
    reader = HeadReader(str(repo), max_files=2, max_bytes=1 << 20)
    assert [name for name, _ in reader] == ["a", "b"]
    assert (reader.status, reader.files) == ("partial", 2)


def test_head_reader_stops_git_when_abandoned(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {f"f{i:04}": str(i) * 1000 for i in range(300)})
    reader = HeadReader(str(repo), max_files=1000, max_bytes=1 << 30)
    iterator = iter(reader)
    assert next(iterator)[0] == "f0000"
    reader.close()
    assert reader._procs == []  # the suite's hygiene check fails a test that leaves git running


def test_head_reader_failures(tmp_path: Path) -> None:
    reader = HeadReader(str(tmp_path), max_files=10, max_bytes=100)
    with pytest.raises(RepositoryError):
        list(reader)
    assert reader.status == "failed"
    repo = make_repo(tmp_path / "repo", {"f": "x" * 10, "g": "kept"})
    blob = git(repo, "rev-parse", "HEAD:f").strip()
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    reader = HeadReader(str(repo), max_files=10, max_bytes=100)
    assert dict(reader) == {"g": b"kept"} and reader.status == "partial"


def test_partial_clone_fetches_nothing(tmp_path: Path) -> None:
    """A clone without its blobs: git would fetch each from the remote to read it; here it may not."""
    source = make_repo(tmp_path / "source", {"f": "x" * 10, "g": "y"})
    git(source, "config", "uploadpack.allowFilter", "true")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--filter=blob:none", "--no-checkout", f"file://{source}", str(clone))

    def objects() -> str:
        return git(clone, "count-objects", "-v")

    before = objects()
    reader = HeadReader(str(clone), max_files=10, max_bytes=1 << 20)
    with pytest.raises(RepositoryError):
        list(reader)
    assert reader.status == "failed" and objects() == before
    git(clone, "ls-tree", "-r", "-l", "HEAD")  # plain git fetches the missing blobs
    assert objects() != before
