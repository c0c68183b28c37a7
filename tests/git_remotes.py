"""Real git remotes on this machine: repositories, an ssh stand-in, a smart-HTTP server, and pushes and uploads through them.

The egress tests and bench/egress.py need source code to leave the way staff would send it (``git push``
over file://, a local path, ssh and https; ``scp``, ``rsync``, ``curl -T``) without a network or an sshd.
The ssh stand-in is a script named ``ssh`` that runs the remote command on this machine, so git, scp and
rsync run it with the arguments they give a real ssh (``host git-receive-pack '/p'``). Being a shell script,
it shows in /proc as ``/bin/sh .../ssh host ...`` (as an ssh wrapper script would), and the remote side's
``git-receive-pack`` runs here too: a test of the agent should expect the ``git push`` itself, not an ssh binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
MAX_BODY = 64 << 20
"""Largest request (a pushed pack, an uploaded file) the local HTTP server takes."""
TIMEOUT = 30.0

# Runs "[options] host command..." as `sh -c "command..."` here (what sshd does with the joined words),
# or the sftp server for `-s ... host sftp` (scp and sftp in their default SFTP mode).
_SSH_STAND_IN = f"""#!/bin/sh
subsystem=""
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    -s) subsystem=1; shift ;;
    -[BbcDEeFIiJLlmOopQRSWw]) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || {{ echo "ssh stand-in: no host" >&2; exit 255; }}
shift
if [ -n "$subsystem" ]; then
  [ "$1" = sftp ] || {{ echo "ssh stand-in: only the sftp subsystem" >&2; exit 255; }}
  exec {SFTP_SERVER}
fi
exec /bin/sh -c "$*"
"""


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with git kept from the machine's and user's configuration and a fixed author."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="Dev",
        GIT_AUTHOR_EMAIL="dev@vendor.example",
        GIT_COMMITTER_NAME="Dev",
        GIT_COMMITTER_EMAIL="dev@vendor.example",
        LANG="C",
    )
    env.update(extra or {})
    return env


def git(cwd: Path | str, *args: str, env: Mapping[str, str] | None = None, timeout: float = TIMEOUT) -> str:
    """Run ``git args`` in ``cwd``; its output, or CalledProcessError carrying git's message."""
    proc = subprocess.run(["git", *args], cwd=cwd, env=git_env(env), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc.stdout


def commit(repo: Path, files: Mapping[str, str | bytes], message: str = "change") -> str:
    """Write ``files`` (paths relative to ``repo``), commit them, return the new HEAD."""
    for name, content in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    git(repo, "add", "--", *files)
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def make_repo(path: Path, files: Mapping[str, str | bytes], *, branch: str = "main") -> Path:
    """A working repository at ``path`` whose first commit holds ``files``.

    The first commit's message carries a random tag: two repositories made from the same files in the
    same second would otherwise share their root commit, and an agent on this machine (another test's,
    running at the same time) would take one for a copy of the other.
    """
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    commit(path, files, f"first ({uuid.uuid4().hex})")
    return path


def make_bare(path: Path) -> Path:
    """An empty bare repository at ``path`` that accepts pushes of any branch."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "--bare")
    return path


def refs_of(bare: Path) -> dict[str, str]:
    """``{ref: sha}`` of a bare repository: what pushes have landed there."""
    out = git(bare, "for-each-ref", "--format=%(refname) %(objectname)")
    return {name: sha for name, sha in (line.split(" ", 1) for line in out.splitlines())}


def ssh_stand_in(folder: Path) -> Path:
    """Write the ssh stand-in as ``folder/ssh`` (executable) and return its path.

    Use it as ``GIT_SSH_COMMAND``, ``scp -S``, ``sftp -S`` or ``rsync -e``; the host named is ignored.
    Options are skipped as ssh would read them (those that take a value, separately or attached).
    """
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "ssh"
    script.write_text(_SSH_STAND_IN)
    script.chmod(0o755)
    return script


def push(
    repo: Path,
    url: str,
    refs: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """``git push url refs...`` from ``repo``; CalledProcessError with git's message when it fails."""
    proc = subprocess.run(
        ["git", "push", "-q", url, *refs],
        cwd=repo,
        env=git_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


def run_tool(argv: Sequence[str], *, cwd: Path | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run an upload tool (scp, rsync, curl...); CalledProcessError with its message when it fails."""
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc


def scp_upload(stand_in: Path, files: Sequence[Path], dest_dir: Path, *, legacy: bool = False) -> None:
    """``scp -S stand_in files... vendor-host:dest_dir/`` (SFTP mode, or the old scp protocol with ``legacy``)."""
    if not legacy and not os.access(SFTP_SERVER, os.X_OK):
        raise FileNotFoundError(f"{SFTP_SERVER} (Debian package openssh-sftp-server) is needed for scp in SFTP mode")
    run_tool(["scp", "-q", "-S", str(stand_in), *(["-O"] if legacy else []), *map(str, files), f"vendor-host:{dest_dir}/"])


def rsync_upload(stand_in: Path, files: Sequence[Path], dest_dir: Path) -> None:
    """``rsync -e stand_in files... vendor-host:dest_dir/``: rsync's own protocol over the stand-in."""
    run_tool(["rsync", "-q", "-e", str(stand_in), *map(str, files), f"vendor-host:{dest_dir}/"])


def sftp_upload(stand_in: Path, files: Sequence[Path], dest_dir: Path, batch: Path) -> None:
    """``sftp -S stand_in -b batch vendor-host``, the batch file holding one ``put`` line per file."""
    batch.write_text("".join(f'put "{file}" "{dest_dir}/{file.name}"\n' for file in files))
    run_tool(["sftp", "-q", "-S", str(stand_in), "-b", str(batch), "vendor-host"])


def rclone_upload(files: Sequence[Path], dest_dir: Path, *, remote: str = "vendor") -> None:
    """``rclone copy file remote:dest_dir`` for each file, ``remote`` being a local-disk rclone remote
    set up through the environment (no rclone configuration file is read or written)."""
    env = dict(os.environ, RCLONE_CONFIG=str(dest_dir / ".no-rclone.conf"), **{f"RCLONE_CONFIG_{remote.upper()}_TYPE": "local"})
    for file in files:
        proc = subprocess.run(["rclone", "copy", str(file), f"{remote}:{dest_dir}"], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)


def curl_upload(file: Path, url: str) -> None:
    """``curl -T file url`` (an HTTP PUT)."""
    run_tool(["curl", "-sS", "--fail", "--max-time", str(int(TIMEOUT)), "-T", str(file), url])


class GitHttpServer:
    """``git http-backend`` behind a threaded CGI server on 127.0.0.1, plus HTTP PUT into ``uploads``.

    ``url(name)`` is the smart-HTTP URL of the bare repository ``root/name``; pushes are accepted
    (``http.receivepack`` on, no authentication). A PUT to ``/upload/<name>`` stores the body as
    ``uploads/<name>``. Use as a context manager: leaving it stops the server and joins its threads.
    """

    def __init__(self, root: Path, uploads: Path | None = None):
        self.root = root
        self.uploads = uploads
        self.requests = 0
        self.chunked = 0
        """Requests whose body came chunked (git sends a pack larger than http.postBuffer so)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = False
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-http", kwargs={"poll_interval": 0.05})

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/git/{name}"

    def upload_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/upload/{name}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, wait for requests in flight, close the socket; harmless twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def _make_handler(owner: GitHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_CgiHandler):
        server_owner = owner

    return Handler


class _CgiHandler(BaseHTTPRequestHandler):
    """One request: /git/... runs ``git http-backend`` as a CGI program; PUT /upload/<name> stores a file."""

    server_owner: GitHttpServer
    protocol_version = "HTTP/1.0"  # one request per connection: the response ends when the socket closes

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Quiet: the tests read results, not access logs."""

    def do_GET(self) -> None:
        self._git()

    def do_POST(self) -> None:
        self._git()

    def do_PUT(self) -> None:
        owner = self.server_owner
        owner.requests += 1
        name = self.path.removeprefix("/upload/")
        if owner.uploads is None or not self.path.startswith("/upload/") or not name or "/" in name or name.startswith("."):
            self.send_error(404)
            return
        body = self._body()
        if body is None:
            return
        (owner.uploads / name).write_bytes(body)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self) -> bytes | None:
        """The request body (Content-Length or chunked), at most MAX_BODY; None after answering an error."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.server_owner.chunked += 1
            parts: list[bytes] = []
            total = 0
            while True:
                try:
                    size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    self.send_error(400)
                    return None
                if size == 0:
                    self.rfile.readline(64)
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    self.send_error(413)
                    return None
                parts.append(self.rfile.read(size))
                self.rfile.readline(64)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.send_error(413 if length > MAX_BODY else 400)
            return None
        return self.rfile.read(length)

    def _git(self) -> None:
        owner = self.server_owner
        owner.requests += 1
        path, _, query = self.path.partition("?")
        if not path.startswith("/git/"):
            self.send_error(404)
            return
        body = self._body() if self.command == "POST" else b""
        if body is None:
            return
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path.removeprefix("/git"),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "GIT_PROJECT_ROOT": str(owner.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
        }
        for header, variable in (("Content-Encoding", "HTTP_CONTENT_ENCODING"), ("Git-Protocol", "GIT_PROTOCOL")):
            if self.headers.get(header):
                env[variable] = self.headers[header]
        try:
            proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            self.send_error(504)
            return
        head, sep, payload = proc.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = proc.stdout.partition(b"\n\n")
        if not sep:
            self.send_error(502, explain=proc.stderr.decode(errors="replace")[:500])
            return
        headers = [line.split(b":", 1) for line in head.splitlines() if b":" in line]
        status = next((int(v.strip().split()[0]) for k, v in headers if k.strip().lower() == b"status"), 200)
        self.send_response(status)
        for key, value in headers:
            if key.strip().lower() != b"status":
                self.send_header(key.strip().decode("latin-1"), value.strip().decode("latin-1"))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def tools_missing(*names: str) -> list[str]:
    """Which of the programs ``names`` this machine lacks (``make apt`` installs them)."""
    return [name for name in names if shutil.which(name) is None]
