"""Quarantine: a matched file written to a removable volume moved off it, encrypted to the collector's key.

Only the collector can give a quarantined file back: each file is encrypted with a data key the
agent derives from a fresh X25519 key pair and the collector's public key (from the device
policy), and forgets; the collector derives the same key from its private key and the file's
ephemeral public key, and sends it with a release command. The format (docs/device-control.md):

- ``<quarantine_dir>/<id>.dlpq``: one JSON header line (``format``, ``id``, ``original_path``,
  ``size``, ``sha256``, ``ephemeral_key``, ``chunk_size``, ``nonce_prefix``, and the file's
  ``mode``/``uid``/``gid``), then the file in AES-256-GCM chunks of ``chunk_size`` bytes (the
  last one shorter; an empty file is one empty chunk), each followed by its 16-byte tag;
- data key = HKDF-SHA256(ECDH(ephemeral, collector), length 32, no salt,
  info ``b"dlp-quarantine-v1:" + id``); nonce = 4 random bytes per file + the chunk's index
  (8 bytes big-endian); associated data = id + index (8 bytes big-endian) + 1 on the last chunk, else 0,
  so chunks cannot be reordered, dropped from the end or moved between files.

Nothing is deleted without its copy: the file is read twice (hash, then encrypt while hashing
again: a file that changed in between is left alone), the copy is fsynced under a temporary
name, renamed, read back and decrypted in full, and only then is the original unlinked.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from agent import events as contract
from agent.private import DIR_MODE, FILE_MODE, make_private_dir
from agent.scanning.results import ScanResult
from agent.sources.work import FileWork, QuarantineReport

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

log = logging.getLogger(__name__)

FORMAT = 1
SUFFIX = ".dlpq"
CHUNK_SIZE = 1 << 20
TAG_SIZE = 16
MAX_HEADER_BYTES = 64 * 1024
FREE_MARGIN_BYTES = 64 << 20
"""Room left on the quarantine's disk after a copy: the spool and the system need it more."""
_RELEASED_KEPT = 1000


def data_key(private_key: X25519PrivateKey, public_key_hex: str, quarantine_id: str) -> bytes:
    """agent.quarantine_key.data_key, imported at the first use (it brings in cryptography)."""
    from agent.quarantine_key import data_key as derive

    return derive(private_key, public_key_hex, quarantine_id)


class QuarantineError(Exception):
    """A quarantined file could not be stored, read or released; the message says why."""


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(8, "big")


def _aad(quarantine_id: str, index: int, final: bool) -> bytes:
    return quarantine_id.encode("ascii") + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def _chunks(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


def _enforcement(action: str, done: bool, detail: str, **extra: Any) -> dict[str, Any]:
    return {"action": action, "mode": "enforce", "done": done, "detail": detail, **extra}


@dataclasses.dataclass(frozen=True)
class Header:
    id: str
    original_path: str
    size: int
    sha256: str
    ephemeral_key: str
    chunk_size: int
    nonce_prefix: str
    mode: int
    uid: int
    gid: int

    def line(self) -> bytes:
        return json.dumps({"format": FORMAT, **dataclasses.asdict(self)}, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def read(cls, handle: IO[bytes]) -> Header:
        line = handle.readline(MAX_HEADER_BYTES)
        try:
            data = json.loads(line)
            if data.pop("format") != FORMAT:
                raise ValueError("format")
            header = cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise QuarantineError("not a quarantined file of this format") from None
        # Typed here, once: a mistyped field further on would be a TypeError out of ``execute``.
        texts, numbers = (header.id, header.original_path, header.sha256, header.ephemeral_key, header.nonce_prefix), (header.size, header.chunk_size, header.mode, header.uid, header.gid)
        if not all(isinstance(value, str) for value in texts) or not all(isinstance(value, int) and not isinstance(value, bool) for value in numbers):
            raise QuarantineError("not a quarantined file of this format")
        if not (0 < header.chunk_size <= 64 << 20) or header.size < 0 or len(bytes.fromhex(header.nonce_prefix)) != 4:
            raise QuarantineError("quarantined file header out of range")
        return header


class Quarantine:
    """The agent's encrypted quarantine folder (0700, files 0600).

    Args:
        directory: ``[usb] quarantine_dir``.
        released_dir: ``[usb] released_dir``, where a released file goes when its folder is gone.
        collector_key: the collector's X25519 public key in force (hex), None without a device policy.
        enabled: ``[usb] on_match == "quarantine"``; off (``audit``), ``enforce`` only says what it would have
            done (release and delete still work, for files quarantined before).
    """

    def __init__(self, directory: str, released_dir: str, collector_key: Callable[[], str | None], *, enabled: bool, chunk_size: int = CHUNK_SIZE):
        self.directory = directory
        self.released_dir = released_dir
        self._collector_key = collector_key
        self.enabled = enabled
        self._chunk_size = chunk_size
        self._lock = threading.Lock()
        self._released: collections.deque[str] = collections.deque(maxlen=_RELEASED_KEPT)

    # Quarantining ------------------------------------------------------------

    def enforce(self, work: FileWork, result: ScanResult) -> dict[str, Any] | None:
        """For a matched file on a removable volume: move it into the quarantine; the event's enforcement."""
        if work.channel != "usb":
            return None
        if not self.enabled:
            return {"action": "quarantine", "mode": "audit", "done": False, "detail": "audit mode: the file was left on the volume"}
        if work.reason == "writing":
            return _enforcement("quarantine", False, "still open for writing: acted on when it is closed")
        with self._lock:
            if result.sha256 is not None and result.sha256 in self._released:
                return _enforcement("quarantine", False, "released by the collector: left in place")
        key = self._collector_key()
        if key is None:
            return _enforcement("quarantine", False, "no device policy from the collector yet (no quarantine key): the file stays")
        root = work.device.mountpoint if work.device is not None else os.path.dirname(work.path)
        try:
            return self._move(work.path, root, key)
        except (OSError, QuarantineError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.error("cannot quarantine %s: %s", work.path, detail)
            return _enforcement("quarantine", False, f"not quarantined: {detail}; the file stays")

    def _move(self, path: str, root: str, collector_key: str) -> dict[str, Any]:
        """Seal ``path`` and unlink it. Its folder is reached from ``root`` (the volume's mountpoint)
        without following a symlink, and the file is opened, checked and unlinked through that one
        folder descriptor: a folder the user swaps for a link meanwhile cannot aim this at another file."""
        make_private_dir(self.directory, tighten=True)
        directory, name = os.path.split(path)
        dir_fd = _open_dir(directory, root)
        try:
            # O_NONBLOCK: a file swapped for a fifo since its scan must not park this thread in open().
            with open(name, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)) as source:
                before = os.fstat(source.fileno())
                if not stat.S_ISREG(before.st_mode):
                    raise QuarantineError("not a regular file")
                free = os.statvfs(self.directory)
                if free.f_bavail * free.f_frsize < before.st_size + FREE_MARGIN_BYTES:
                    raise QuarantineError(f"not enough room in {self.directory}")
                sha256 = _hash(source)
                source.seek(0)
                quarantine_id = str(uuid.uuid4())
                # Imported here: cryptography costs about 6 MB of RSS that an idle agent which never
                # quarantines does not need (issue 22); the same in _write and _decrypt.
                from cryptography.hazmat.primitives import serialization
                from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

                ephemeral = X25519PrivateKey.generate()
                header = Header(
                    id=quarantine_id, original_path=path, size=before.st_size, sha256=sha256,
                    ephemeral_key=ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex(),
                    chunk_size=self._chunk_size, nonce_prefix=os.urandom(4).hex(),
                    mode=stat.S_IMODE(before.st_mode), uid=before.st_uid, gid=before.st_gid,
                )  # fmt: skip
                key = data_key(ephemeral, collector_key, quarantine_id)
                target = self._path(quarantine_id)
                temporary = os.path.join(self.directory, f".{quarantine_id}.part")
                try:
                    self._write(source, header, key, temporary)
                    os.replace(temporary, target)
                    _sync_dir(self.directory)
                    if self._verify(target, key) != sha256:
                        raise QuarantineError("the encrypted copy does not read back as the file")
                    # ctime too: a user may rewrite the file and set its mtime back, never its ctime.
                    if _identity(os.stat(name, dir_fd=dir_fd, follow_symlinks=False)) != _identity(before):
                        raise QuarantineError("changed while being quarantined")
                    os.unlink(name, dir_fd=dir_fd)
                except BaseException:
                    for leftover in (temporary, target):
                        _remove(leftover)
                    raise
            _sync_fd(dir_fd)
        finally:
            os.close(dir_fd)
        log.warning("quarantined %s as %s", path, target)
        return _enforcement(
            "quarantine", True, f"moved off the volume into the encrypted quarantine ({target})",
            quarantine={"id": quarantine_id, "ephemeral_key": header.ephemeral_key, "original_path": path, "size": header.size, "sha256": sha256},
        )

    def _write(self, source: IO[bytes], header: Header, key: bytes, temporary: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aes = AESGCM(key)
        prefix = bytes.fromhex(header.nonce_prefix)
        digest = hashlib.sha256()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(header.line())
            count = _chunks(header.size, header.chunk_size)
            for index in range(count):
                chunk = source.read(header.chunk_size)
                final = index == count - 1
                if (len(chunk) != header.chunk_size and not final) or (final and len(chunk) != header.size - index * header.chunk_size):
                    raise QuarantineError("changed while being quarantined")
                digest.update(chunk)
                out.write(aes.encrypt(_nonce(prefix, index), chunk, _aad(header.id, index, final)))
            if source.read(1) or digest.hexdigest() != header.sha256:
                raise QuarantineError("changed while being quarantined")
            out.flush()
            os.fsync(out.fileno())

    def _verify(self, path: str, key: bytes) -> str:
        """Decrypt the whole copy without writing it anywhere; its sha256."""
        digest = hashlib.sha256()
        for chunk in self._decrypt(path, key)[1]:
            digest.update(chunk)
        return digest.hexdigest()

    def _decrypt(self, path: str, key: bytes) -> tuple[Header, Iterator[bytes]]:
        handle = open(path, "rb")
        try:
            header = Header.read(handle)
        except BaseException:
            handle.close()
            raise
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aes = AESGCM(key)
        prefix = bytes.fromhex(header.nonce_prefix)

        def chunks() -> Iterator[bytes]:
            with handle:
                count = _chunks(header.size, header.chunk_size)
                for index in range(count):
                    final = index == count - 1
                    length = (header.size - index * header.chunk_size if final else header.chunk_size) + TAG_SIZE
                    sealed = handle.read(length)
                    if len(sealed) != length:
                        raise QuarantineError("the quarantined file is truncated")
                    try:
                        yield aes.decrypt(_nonce(prefix, index), sealed, _aad(header.id, index, final))
                    except InvalidTag:
                        raise QuarantineError("the key does not open this file (or the file was altered)") from None

        return header, chunks()

    def _path(self, quarantine_id: str) -> str:
        if str(uuid.UUID(quarantine_id)) != quarantine_id:
            raise QuarantineError("not a quarantine id")
        return os.path.join(self.directory, quarantine_id + SUFFIX)

    # The collector's commands -------------------------------------------------

    def execute(self, command: dict[str, Any]) -> QuarantineReport:
        """Carry out a ``release`` or ``delete`` command; the report event, done or not."""
        op, quarantine_id, command_id = command.get("op"), str(command.get("quarantine_id", "")), command.get("id")
        kind = contract.QUARANTINE_RELEASED if op == "release" else contract.QUARANTINE_DELETED
        action = "release" if op == "release" else "delete"
        facts: dict[str, Any] = {"id": quarantine_id, "ephemeral_key": None, "original_path": None, "size": None, "sha256": None}
        extras = {"command": command_id, "quarantine": facts}
        path = ""
        try:
            source = self._path(quarantine_id)
            with open(source, "rb") as handle:
                header = Header.read(handle)
            path = header.original_path
            facts.update(ephemeral_key=header.ephemeral_key, original_path=path, size=header.size, sha256=header.sha256)
            if op == "release":
                path = self._release(source, header, str(command.get("key", "")))
                detail = f"decrypted to {path}"
            elif op == "delete":
                os.unlink(source)
                _sync_dir(self.directory)
                detail = "deleted from the quarantine"
            else:
                raise QuarantineError(f"unknown command {str(op)[:40]!r}")
        except (OSError, QuarantineError, ValueError) as exc:
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if isinstance(exc, FileNotFoundError) and not path:
                text = "no such quarantined file on this agent"
            log.error("quarantine %s of %s failed: %s", action, quarantine_id[:36], text)
            return QuarantineReport(type=kind, path=path or None, enforcement=_enforcement(action, False, text, **extras))
        log.warning("quarantine %s of %s: %s", action, quarantine_id, detail)
        return QuarantineReport(type=kind, path=path, size=header.size, sha256=header.sha256, enforcement=_enforcement(action, True, detail, **extras))

    def _release(self, source: str, header: Header, key_hex: str) -> str:
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            raise QuarantineError("the release key is not hex") from None
        if len(key) != 32:
            raise QuarantineError("the release key is not 32 bytes")
        # All of it opened with the key first: a wrong key leaves nothing anywhere.
        if self._verify(source, key) != header.sha256:
            raise QuarantineError("the decrypted file does not match its sha256")
        dir_fd, name, target = self._destination(header)
        try:
            with self._lock:
                self._released.append(header.sha256)  # the copy written back is not quarantined again
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE, dir_fd=dir_fd)
            try:
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as out:
                    for chunk in self._decrypt(source, key)[1]:
                        digest.update(chunk)
                        out.write(chunk)
                    if target != os.path.join(self.released_dir, name):
                        _restore_owner(out.fileno(), header)  # on the descriptor: the name may be a link by now
                    out.flush()
                    os.fsync(out.fileno())
                if digest.hexdigest() != header.sha256:
                    raise QuarantineError("the quarantined file changed during its release")
            except BaseException:
                _remove(name, dir_fd=dir_fd)
                raise
            _sync_fd(dir_fd)
        finally:
            os.close(dir_fd)
        os.unlink(source)
        _sync_dir(self.directory)
        return target

    def _destination(self, header: Header) -> tuple[int, str, str]:
        """Where a release writes: the original folder when it is still there, reached from ``/``
        without following a symlink, and the name is free; else the released folder. The folder's
        descriptor, the name in it, and the full path for the report."""
        original = header.original_path
        directory, name = os.path.split(original)
        if os.path.isabs(original) and os.path.normpath(original) == original and name:
            try:
                dir_fd = _open_dir(directory, "/")
            except (OSError, QuarantineError) as exc:
                log.warning("released file not put back in %s (%s): it goes to %s", directory, exc, self.released_dir)
            else:
                try:
                    free = not _lexists(name, dir_fd)
                except OSError:
                    free = False
                if free:
                    return dir_fd, name, original
                os.close(dir_fd)
        make_private_dir(self.released_dir)
        os.chmod(self.released_dir, DIR_MODE)
        dir_fd = os.open(self.released_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        name = name or header.id
        if _lexists(name, dir_fd):
            name = f"{header.id}-{name}"
        return dir_fd, name, os.path.join(self.released_dir, name)

    def held(self) -> list[str]:
        """The ids of the files held now."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(name[: -len(SUFFIX)] for name in names if name.endswith(SUFFIX))


def _hash(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(CHUNK_SIZE):
        digest.update(chunk)
    return digest.hexdigest()


def _restore_owner(fd: int, header: Header) -> None:
    """The released file gets the owner and mode it had (best effort: FAT-like volumes have neither)."""
    try:
        os.fchown(fd, header.uid, header.gid)
        os.fchmod(fd, header.mode & 0o777)
    except OSError as exc:
        log.debug("cannot restore owner and mode of %s: %s", header.original_path, exc)


def _identity(status: os.stat_result) -> tuple[int, ...]:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def _open_dir(directory: str, root: str) -> int:
    """A descriptor of ``directory``, reached from ``root`` (opened as it is: a mountpoint, or ``/``)
    one name at a time, none of them a symlink, ``.`` or ``..``."""
    below = os.path.relpath(directory, root) if directory != root else "."
    names = [] if below == "." else below.split(os.sep)
    if any(part in ("", ".", "..") for part in names):
        raise QuarantineError(f"{directory} is not below {root}")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in names:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lexists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _sync_fd(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (FUSE ones) cannot sync a directory


def _sync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        _sync_fd(fd)
    finally:
        os.close(fd)


def _remove(path: str, *, dir_fd: int | None = None) -> None:
    try:
        os.unlink(path, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
