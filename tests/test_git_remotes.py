"""The egress harness itself: pushes over every transport land in the bare repository, uploads copy the bytes.

The agent's egress tests and bench/egress.py trust these remotes; a stand-in that silently did
nothing would make every "event seen" figure meaningless, so each transport is checked end to end.
"""

from __future__ import annotations

import random
import socket
import subprocess
from pathlib import Path

import pytest

from tests.git_remotes import (
    GitHttpServer,
    commit,
    curl_upload,
    git,
    make_bare,
    make_repo,
    push,
    rclone_upload,
    refs_of,
    rsync_upload,
    scp_upload,
    sftp_upload,
    ssh_stand_in,
    tools_missing,
)

SOURCE = {"src/app.py": "def handler(event):\n    return event\n", "README.md": "customer code\n"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "work" / "app", SOURCE)


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    return make_bare(tmp_path / "remotes" / "app.git")


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def test_repository_has_the_files_and_one_commit(repo: Path) -> None:
    assert git(repo, "ls-files").split() == ["README.md", "src/app.py"]
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "1"
    assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/main"


def test_repositories_of_the_same_files_have_their_own_root(tmp_path: Path) -> None:
    roots = {git(make_repo(tmp_path / name, SOURCE), "rev-list", "--max-parents=0", "HEAD") for name in ("a", "b")}
    assert len(roots) == 2


def test_push_over_file_url(repo: Path, bare: Path) -> None:
    push(repo, f"file://{bare}", ["main"])
    assert refs_of(bare) == {"refs/heads/main": head(repo)}


def test_push_to_a_plain_path_then_a_second_commit(repo: Path, bare: Path) -> None:
    push(repo, str(bare), ["main"])
    second = commit(repo, {"src/more.py": "x = 1\n"}, "second")
    push(repo, str(bare), ["HEAD:refs/heads/feature"])
    assert refs_of(bare) == {"refs/heads/main": git(repo, "rev-parse", "HEAD~1").strip(), "refs/heads/feature": second}


def test_push_through_the_ssh_stand_in(repo: Path, bare: Path, tmp_path: Path) -> None:
    stand_in = ssh_stand_in(tmp_path / "bin")
    push(repo, f"ssh://git@vendor-host:2222{bare}", ["main"], env={"GIT_SSH_COMMAND": str(stand_in)})
    assert refs_of(bare) == {"refs/heads/main": head(repo)}
    push(repo, f"git@vendor-host:{bare}", ["main:refs/heads/scp-like"], env={"GIT_SSH_COMMAND": str(stand_in)})
    assert refs_of(bare)["refs/heads/scp-like"] == head(repo)


def test_push_over_smart_http(repo: Path, bare: Path) -> None:
    with GitHttpServer(bare.parent) as server:
        push(repo, server.url(bare.name), ["main"])
        commit(repo, {"big.bin": random.Random(17).randbytes(300_000)}, "more than http.postBuffer, sent chunked")
        push(repo, server.url(bare.name), ["main"], env={"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.postBuffer", "GIT_CONFIG_VALUE_0": "65536"})
        assert server.requests >= 4
        assert server.chunked >= 1
    assert refs_of(bare) == {"refs/heads/main": head(repo)}


def test_http_push_to_a_missing_repository_fails(repo: Path, tmp_path: Path) -> None:
    with GitHttpServer(tmp_path) as server, pytest.raises(subprocess.CalledProcessError) as failed:
        push(repo, server.url("nothing.git"), ["main"])
    assert "nothing.git" in failed.value.stderr or "not found" in failed.value.stderr.lower()


def test_failed_push_says_why(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        push(repo, str(tmp_path / "no-such.git"), ["main"])
    assert "no-such.git" in failed.value.stderr


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-scp"])
def test_scp_through_the_stand_in(repo: Path, tmp_path: Path, legacy: bool) -> None:
    if missing := tools_missing("scp"):
        pytest.skip(f"not installed: {missing} (make apt)")
    stand_in = ssh_stand_in(tmp_path / "bin")
    dest = tmp_path / "received"
    dest.mkdir()
    scp_upload(stand_in, [repo / "src" / "app.py", repo / "README.md"], dest, legacy=legacy)
    assert (dest / "app.py").read_text() == SOURCE["src/app.py"]
    assert (dest / "README.md").read_text() == SOURCE["README.md"]


def test_rsync_through_the_stand_in(repo: Path, tmp_path: Path) -> None:
    if missing := tools_missing("rsync"):
        pytest.skip(f"not installed: {missing} (make apt)")
    stand_in = ssh_stand_in(tmp_path / "bin")
    dest = tmp_path / "received"
    dest.mkdir()
    rsync_upload(stand_in, [repo / "src" / "app.py"], dest)
    assert (dest / "app.py").read_text() == SOURCE["src/app.py"]


def test_sftp_batch_through_the_stand_in(repo: Path, tmp_path: Path) -> None:
    if missing := tools_missing("sftp"):
        pytest.skip(f"not installed: {missing} (make apt)")
    stand_in = ssh_stand_in(tmp_path / "bin")
    dest = tmp_path / "received"
    dest.mkdir()
    sftp_upload(stand_in, [repo / "src" / "app.py", repo / "README.md"], dest, tmp_path / "batch")
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "app.py"]
    assert (dest / "app.py").read_text() == SOURCE["src/app.py"]


def test_rclone_to_a_local_remote(repo: Path, tmp_path: Path) -> None:
    if missing := tools_missing("rclone"):
        pytest.skip(f"not installed: {missing} (make apt)")
    dest = tmp_path / "received"
    dest.mkdir()
    rclone_upload([repo / "src" / "app.py"], dest)
    assert (dest / "app.py").read_text() == SOURCE["src/app.py"]
    assert not (dest / ".no-rclone.conf").exists()


def test_curl_put_is_stored(repo: Path, tmp_path: Path) -> None:
    if missing := tools_missing("curl"):
        pytest.skip(f"not installed: {missing} (make apt)")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    with GitHttpServer(tmp_path, uploads) as server:
        curl_upload(repo / "src" / "app.py", server.upload_url("app.py"))
        with pytest.raises(subprocess.CalledProcessError):
            curl_upload(repo / "README.md", server.upload_url("..hidden"))
    assert [p.name for p in uploads.iterdir()] == ["app.py"]
    assert (uploads / "app.py").read_text() == SOURCE["src/app.py"]


@pytest.mark.parametrize(
    "headers, body",
    [("Content-Length: -5", b""), ("Content-Length: many", b""), ("Transfer-Encoding: chunked", b"zz\r\nabc\r\n0\r\n\r\n")],
    ids=["negative-length", "bad-length", "bad-chunk-size"],
)
def test_server_refuses_a_malformed_body(tmp_path: Path, headers: str, body: bytes) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    with GitHttpServer(tmp_path, uploads) as server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"PUT /upload/x HTTP/1.1\r\nHost: a\r\n{headers}\r\n\r\n".encode() + body)
        reply = sock.makefile("rb").readline()
    assert reply.split()[1] == b"400"
    assert list(uploads.iterdir()) == []


def test_stand_in_runs_the_command_after_ssh_options(tmp_path: Path) -> None:
    stand_in = ssh_stand_in(tmp_path / "bin")
    out = subprocess.run(
        [str(stand_in), "-x", "-o", "BatchMode=yes", "-oStrictHostKeyChecking=no", "-p", "22", "-l", "dev", "host", "echo", "a", "b"],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    assert out.stdout == "a b\n"
