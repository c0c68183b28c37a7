"""Compiled rulesets kept on disk by content hash, so a start does not recompile thousands of rules.

A compiled YARA file is not data libyara checks: loading one rebuilds the rules' code and tables as
written, and a crafted file can make the loader and later scans read and write out of bounds. The
cache lives on machines whose users may be hostile, so a cache file is loaded only when:

- its directory is the agent user's own: created 0700, not a link, owned by the effective user and
  writable by nobody else (else no cache is used at all);
- it carries an HMAC-SHA256, under a random 32-byte key kept in that directory (``key``, 0600), of
  everything after the MAC: the header naming the content hash it was built for, and the compiled
  bytes. A file from another machine or user, a truncated or corrupted one, or one written by
  anybody who cannot read the key does not verify;
- the hash it names is the one wanted (sources, external variables' definitions, libyara and
  yara-python versions).

The bytes are read once, checked, and handed to ``yara.load`` from memory, so what was checked is
what is loaded. A file that fails any check is deleted and the rules are compiled afresh.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import stat
import struct
import sys
from typing import Any

import yara

log = logging.getLogger(__name__)

MAGIC = b"DLPRC\x001\n"
SUFFIX = ".yarc"
KEY_FILE = "key"
KEY_BYTES = 32
MAX_FILE_BYTES = 1 << 30
KEEP = 8
"""Cache files kept per directory (the newest); older ones go when a new one is written."""

_POSIX = os.name == "posix"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def default_dir() -> str | None:
    """The user's cache for ``dlp-agent scan``: ``$DLP_AGENT_RULES_CACHE`` (empty: none), else
    ``$XDG_CACHE_HOME/dlp-agent/rules`` or ``~/.cache/dlp-agent/rules`` (``%LOCALAPPDATA%`` on Windows)."""
    configured = os.environ.get("DLP_AGENT_RULES_CACHE")
    if configured is not None:
        return configured or None
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dlp-agent", "rules") if base else None


class CompiledCache:
    """Compiled rules by content hash in ``directory`` (see the module's notes)."""

    def __init__(self, directory: str):
        self.directory = directory
        self._key: bytes | None = None

    def load(self, digest: str) -> tuple[Any, dict[str, Any]] | None:
        """The rules and header stored for ``digest``, or None (missing, foreign, tampered, corrupt)."""
        key = self._secret()
        if key is None:
            return None
        path = self._path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _BINARY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.info("compiled rules cache %s not used: %s", path, exc.strerror or exc)
            return None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            problem = _ownership_problem(info, regular=True)
            if problem is None and info.st_size > MAX_FILE_BYTES:
                problem = "too large"
            blob = f.read() if problem is None else b""
        if problem is None:
            problem, found = _unpack(blob, key, digest)
        if problem is None:
            header, body = found
            try:
                rules = _load(body)
            except yara.Error as exc:
                problem = f"does not load: {exc}"
            else:
                return rules, header
        log.warning("compiled rules cache %s ignored (%s); compiling the rules again", path, problem)
        _remove(path)
        return None

    def store(self, digest: str, rules: Any, header: dict[str, Any]) -> None:
        """Write ``rules`` for ``digest``; failures are logged, never raised (the cache is an optimisation)."""
        key = self._secret()
        if key is None:
            return
        try:
            compiled = _save(rules)
        except (yara.Error, OSError) as exc:
            log.info("compiled rules not cached: %s", exc)
            return
        meta = json.dumps({**header, "digest": digest}, sort_keys=True).encode()
        signed = struct.pack(">I", len(meta)) + meta + compiled
        blob = MAGIC + hmac.new(key, signed, hashlib.sha256).digest() + signed
        try:
            import tempfile  # only when compiling: loading the cache (every scan) does without

            fd, scratch = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                os.replace(scratch, self._path(digest))
            except BaseException:
                _remove(scratch)
                raise
        except OSError as exc:
            log.info("compiled rules not cached in %s: %s", self.directory, exc.strerror or exc)
            return
        self._prune(keep=self._path(digest))

    # Pieces ----------------------------------------------------------------

    def _path(self, digest: str) -> str:
        return os.path.join(self.directory, digest + SUFFIX)

    def _secret(self) -> bytes | None:
        """The HMAC key; None (no cache) when the directory is not the agent user's own."""
        if self._key is not None:
            return self._key
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            info = os.lstat(self.directory)
        except OSError as exc:
            log.warning("no compiled rules cache: %s: %s", self.directory, exc.strerror or exc)
            return None
        problem = _ownership_problem(info, regular=False)
        if problem is not None:
            log.warning("no compiled rules cache: %s is %s", self.directory, problem)
            return None
        path = os.path.join(self.directory, KEY_FILE)
        key = _read_key(path)
        if key is None:
            key = _new_key(path, self.directory)
        self._key = key
        return key

    def _prune(self, *, keep: str) -> None:
        try:
            names = [n for n in os.listdir(self.directory) if n.endswith(SUFFIX)]
            files = sorted((os.path.join(self.directory, n) for n in names), key=_mtime, reverse=True)
        except OSError:
            return
        for path in files[KEEP:]:
            if path != keep:
                _remove(path)


def _memfd() -> int | None:
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None or not os.path.isdir("/proc/self/fd"):
        return None
    return int(memfd_create("dlp-rules", getattr(os, "MFD_CLOEXEC", 0)))


def _save(rules: Any) -> bytes:
    """The compiled bytes (through a memfd where there is one: saving to a file object costs 10x, as loading)."""
    fd = _memfd()
    if fd is None:
        out = io.BytesIO()
        rules.save(file=out)
        return out.getvalue()
    try:
        rules.save(filepath=f"/proc/self/fd/{fd}")
        size = os.fstat(fd).st_size
        chunks = []
        offset = 0
        while offset < size:
            chunk = os.pread(fd, min(size - offset, 1 << 24), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _load(body: memoryview) -> Any:
    """``yara.load`` of checked bytes. From a file object yara-python makes one Python call per item
    read (550,000 for 6,000 rules: 0.5-1 s); from a path it reads natively (0.06 s). So on Linux the
    bytes go to an anonymous memory file (memfd) that only this process holds, loaded by its
    /proc/self/fd path: nobody can change them between the check and the load."""
    fd = _memfd()
    if fd is not None:
        try:
            with open(fd, "wb", closefd=False) as f:
                f.write(body)
            return yara.load(filepath=f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    return yara.load(file=io.BytesIO(body))


def compact(rules: Any) -> Any:
    """``rules`` saved and loaded back: the same rules in exact-size memory (see rules._compile)."""
    return _load(memoryview(_save(rules)))


def _unpack(blob: bytes, key: bytes, digest: str) -> tuple[str | None, Any]:
    head = len(MAGIC) + 32
    if len(blob) < head + 4 or not blob.startswith(MAGIC):
        return "not a cache file", None
    view = memoryview(blob)
    mac, signed = view[len(MAGIC) : head], view[head:]
    if not hmac.compare_digest(mac, hmac.new(key, signed, hashlib.sha256).digest()):
        return "its MAC does not verify (written elsewhere, changed or damaged)", None
    (size,) = struct.unpack(">I", signed[:4])
    try:
        header = json.loads(bytes(signed[4 : 4 + size]))
    except ValueError:
        return "unreadable header", None
    if not isinstance(header, dict) or header.get("digest") != digest:
        return "built for other rules", None
    return None, (header, signed[4 + size :])


def _ownership_problem(info: os.stat_result, *, regular: bool) -> str | None:
    if regular and not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if not regular and not stat.S_ISDIR(info.st_mode):
        return "not a directory (a link?)"
    if _POSIX:
        if info.st_uid != os.geteuid():
            return f"owned by uid {info.st_uid}, not {os.geteuid()}"
        if info.st_mode & 0o022:
            return f"writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _read_key(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _BINARY)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if _ownership_problem(info, regular=True) is not None or (_POSIX and info.st_mode & 0o077):
            return None
        key = f.read(KEY_BYTES + 1)
    return key if len(key) == KEY_BYTES else None


def _new_key(path: str, directory: str) -> bytes | None:
    """A fresh key, unless another process made one first (then that one)."""
    import tempfile

    fd, scratch = tempfile.mkstemp(prefix=".key-", dir=directory)  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(KEY_BYTES))
        try:
            os.link(scratch, path)
        except FileExistsError:
            existing = _read_key(path)
            if existing is not None:
                return existing
            os.replace(scratch, path)  # a bad key file (wrong mode or size): ours replaces it
        except OSError:
            os.replace(scratch, path)  # no hard links here
    except OSError as exc:
        log.warning("no compiled rules cache: cannot write %s: %s", path, exc.strerror or exc)
        return None
    finally:
        _remove(scratch)
    return _read_key(path)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
