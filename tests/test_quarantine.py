"""Quarantine of matched files on removable volumes: the encrypted store, release and delete, on real
ext4 sticks, in-process and under a real agent."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent import events as contract
from agent.device_policy import PolicyHolder, PolicyStore
from agent.device_updater import DeviceUpdater
from agent.identity import Identity, Link
from agent.quarantine import SUFFIX, Quarantine, data_key
from agent.scanning import Scanner
from agent.scanning.results import Status
from agent.sources.work import Device, FileWork
from agent.spool import Spool
from tests.conftest import SECRET_WORD
from tests.loopdev import LoopMounts
from tests.test_device_control import Bench, bench, document, public_hex  # noqa: F401 (bench is a fixture)
from tests.waiting import wait_for

LEAK = b"token = '" + SECRET_WORD.encode() + b"'\n"
# More than two chunks, so the chunk counter, the final flag and a short last chunk are all exercised.
BIG = b"harmless line of padding text\n" * 90_000 + LEAK + b"tail\n" * 1000


@pytest.fixture
def stick(tmp_path: Path) -> Iterator[Path]:
    with LoopMounts(tmp_path) as mounts:
        yield mounts.mount_loop(mounts.image("stick.img", "ext4", size="32M"), tmp_path / "media" / "STICK")


@pytest.fixture
def collector_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


@pytest.fixture
def quarantine(tmp_path: Path, collector_key: X25519PrivateKey) -> Quarantine:
    return Quarantine(str(tmp_path / "quarantine"), str(tmp_path / "released"), lambda: public_hex(collector_key), enabled=True)


def quarantine_file(quarantine: Quarantine, scanner: Scanner, path: Path) -> dict[str, Any]:
    result = scanner.scan_path(str(path))
    assert result.status is Status.MATCH
    enforcement = quarantine.enforce(FileWork(path=str(path), channel="usb", reason="closed"), result)
    assert enforcement is not None
    return enforcement


def release(quarantine: Quarantine, collector_key: X25519PrivateKey, held: dict[str, Any], command: int = 1) -> Any:
    key = data_key(collector_key, held["ephemeral_key"], held["id"])
    return quarantine.execute({"id": command, "op": "release", "quarantine_id": held["id"], "key": key.hex()})


def test_a_matched_file_leaves_the_stick_encrypted_and_comes_back_byte_identical(
    stick: Path, tmp_path: Path, scanner: Scanner, quarantine: Quarantine, collector_key: X25519PrivateKey
) -> None:
    target = stick / "dump.sql"
    target.write_bytes(BIG)
    os.chown(target, 1000, 1000)
    os.chmod(target, 0o640)

    enforcement = quarantine_file(quarantine, scanner, target)
    assert (enforcement["action"], enforcement["mode"], enforcement["done"]) == ("quarantine", "enforce", True), enforcement
    held = enforcement["quarantine"]
    assert held["original_path"] == str(target) and held["size"] == len(BIG) and held["sha256"] == hashlib.sha256(BIG).hexdigest()
    assert not target.exists(), "still on the stick"
    stored = tmp_path / "quarantine" / (held["id"] + SUFFIX)
    assert os.stat(tmp_path / "quarantine").st_mode & 0o777 == 0o700 and os.stat(stored).st_mode & 0o777 == 0o600
    body = stored.read_bytes()
    header = json.loads(body.split(b"\n", 1)[0])
    assert header["ephemeral_key"] == held["ephemeral_key"] and header["chunk_size"] == 1 << 20
    assert SECRET_WORD.encode() not in body and b"harmless line" not in body, "plaintext in the store"

    wrong = quarantine.execute({"id": 1, "op": "release", "quarantine_id": held["id"], "key": os.urandom(32).hex()})
    assert wrong.type == contract.QUARANTINE_RELEASED and wrong.enforcement["done"] is False
    assert "key does not open" in wrong.enforcement["detail"] and wrong.enforcement["command"] == 1
    assert stored.exists() and not target.exists(), "a wrong key must change nothing"

    report = release(quarantine, collector_key, held, command=2)
    assert report.enforcement["done"] is True and report.path == str(target)
    assert report.enforcement["quarantine"] == held and report.enforcement["command"] == 2
    assert target.read_bytes() == BIG
    assert (os.stat(target).st_uid, os.stat(target).st_mode & 0o777) == (1000, 0o640)
    assert not stored.exists() and quarantine.held() == []
    again = quarantine_file(quarantine, scanner, target)
    assert again["done"] is False and "released by the collector" in again["detail"]
    assert target.exists()


def test_release_without_the_original_folder_goes_to_released_and_delete_removes(
    stick: Path, tmp_path: Path, scanner: Scanner, quarantine: Quarantine, collector_key: X25519PrivateKey
) -> None:
    (stick / "project").mkdir()
    first, second = stick / "project" / "a.py", stick / "b.py"
    first.write_bytes(LEAK)
    second.write_bytes(LEAK + b"# second\n")
    held_first = quarantine_file(quarantine, scanner, first)["quarantine"]
    held_second = quarantine_file(quarantine, scanner, second)["quarantine"]
    (stick / "project").rmdir()

    report = release(quarantine, collector_key, held_first)
    assert report.enforcement["done"] is True and report.path == str(tmp_path / "released" / "a.py")
    assert Path(report.path).read_bytes() == LEAK and os.stat(tmp_path / "released").st_mode & 0o777 == 0o700

    deleted = quarantine.execute({"id": 3, "op": "delete", "quarantine_id": held_second["id"]})
    assert (deleted.type, deleted.path, deleted.enforcement["done"]) == (contract.QUARANTINE_DELETED, str(second), True)
    assert quarantine.held() == [] and not second.exists()
    gone = quarantine.execute({"id": 4, "op": "delete", "quarantine_id": held_second["id"]})
    assert gone.enforcement["done"] is False and "no such quarantined file" in gone.enforcement["detail"]
    bogus = quarantine.execute({"id": 5, "op": "release", "quarantine_id": "../../etc/passwd", "key": "00" * 32})
    assert bogus.enforcement["done"] is False


def test_nothing_is_moved_without_a_collector_key_or_while_a_file_is_written(stick: Path, tmp_path: Path, scanner: Scanner) -> None:
    target = stick / "keys.txt"
    target.write_bytes(LEAK)
    keyless = Quarantine(str(tmp_path / "q"), str(tmp_path / "r"), lambda: None, enabled=True)
    result = scanner.scan_path(str(target))
    enforcement = keyless.enforce(FileWork(path=str(target), channel="usb"), result)
    assert enforcement is not None and enforcement["done"] is False and "no quarantine key" in enforcement["detail"]
    writing = Quarantine(str(tmp_path / "q"), str(tmp_path / "r"), lambda: public_hex(X25519PrivateKey.generate()), enabled=True)
    enforcement = writing.enforce(FileWork(path=str(target), channel="usb", reason="writing"), result)
    assert enforcement is not None and enforcement["done"] is False
    audit = Quarantine(str(tmp_path / "q"), str(tmp_path / "r"), lambda: "00" * 32, enabled=False).enforce(FileWork(path=str(target), channel="usb"), result)
    assert audit is not None and (audit["mode"], audit["done"]) == ("audit", False)
    assert target.read_bytes() == LEAK and not (tmp_path / "q").exists()


def usb_writes(agent: Any, path: Path) -> list[dict[str, Any]]:
    return [e for e in agent.events() if e["type"] == "usb.write" and e["path"] == str(path) and e["status"] == "match"]


def test_an_agent_quarantines_a_matched_file_and_audit_leaves_it(bench: Bench, collector_key: X25519PrivateKey) -> None:  # noqa: F811
    bench.store(document(1, "audit", quarantine_key=public_hex(collector_key)))
    agent = bench.agent('on_match = "quarantine"')
    target = bench.stick("STICK") / "leak.txt"
    wait_for(lambda: f"usb:{target.parent}" in agent.status().get("sources", {}), timeout=15, message="stick watched")
    target.write_bytes(LEAK)
    (event,) = wait_for(lambda: usb_writes(agent, target), timeout=15, message="usb.write")
    assert event["enforcement"]["action"] == "quarantine" and event["enforcement"]["done"] is True, event["enforcement"]
    assert not target.exists()
    held = event["enforcement"]["quarantine"]
    stored = bench.home / "quarantine" / (held["id"] + SUFFIX)
    assert stored.exists() and LEAK not in stored.read_bytes()
    uuid.UUID(held["id"])
    agent.stop()

    audit = bench.agent()
    other = bench.stick("OTHER") / "leak.txt"
    wait_for(lambda: f"usb:{other.parent}" in audit.status().get("sources", {}), timeout=15, message="stick watched")
    other.write_bytes(LEAK)
    (event,) = wait_for(lambda: usb_writes(audit, other), timeout=15, message="usb.write in audit")
    assert (event["enforcement"]["action"], event["enforcement"]["mode"], event["enforcement"]["done"]) == ("quarantine", "audit", False)
    assert other.read_bytes() == LEAK and bench.home.joinpath("quarantine").exists() and len(os.listdir(bench.home / "quarantine")) == 1


def test_a_release_never_follows_a_folder_swapped_for_a_symlink(
    stick: Path, tmp_path: Path, scanner: Scanner, quarantine: Quarantine, collector_key: X25519PrivateKey
) -> None:
    """The stick is the user's: between quarantine and release its folder may become a link to
    /etc/cron.d or the like, and the agent (root) must not write the file there nor chown through it."""
    (stick / "docs").mkdir()
    target = stick / "docs" / "job"
    target.write_bytes(LEAK)
    os.chown(target, 0, 0)
    held = quarantine_file(quarantine, scanner, target)["quarantine"]
    elsewhere = tmp_path / "system"
    elsewhere.mkdir()
    (stick / "docs").rmdir()
    (stick / "docs").symlink_to(elsewhere)

    report = release(quarantine, collector_key, held)
    assert report.enforcement["done"] is True and report.path == str(tmp_path / "released" / "job")
    assert list(elsewhere.iterdir()) == [], "written through the symlink"
    assert Path(report.path).read_bytes() == LEAK


def test_quarantine_never_acts_through_a_folder_swapped_for_a_symlink(stick: Path, tmp_path: Path, scanner: Scanner, quarantine: Quarantine) -> None:
    """A file event names a path on the stick; by the time it is quarantined the user may have made
    its folder a link to another place, whose file of the same name must not be taken."""
    (stick / "docs").mkdir()
    target = stick / "docs" / "notes.txt"
    target.write_bytes(LEAK)
    result = scanner.scan_path(str(target))
    assert result.status is Status.MATCH
    someone_elses = tmp_path / "home"
    someone_elses.mkdir()
    (someone_elses / "notes.txt").write_bytes(LEAK)
    (stick / "docs").rename(stick / "moved")
    (stick / "docs").symlink_to(someone_elses)

    work = FileWork(path=str(target), channel="usb", reason="closed", device=Device(mountpoint=str(stick)))
    enforcement = quarantine.enforce(work, result)
    assert enforcement is not None and enforcement["done"] is False, enforcement
    assert (someone_elses / "notes.txt").read_bytes() == LEAK and quarantine.held() == []


class RewritingQuarantine(Quarantine):
    """Rewrites the file in place once its copy is verified, restoring its mtime, as a user holding it open could."""

    def _verify(self, path: str, key: bytes) -> str:
        digest = super()._verify(path, key)
        if path.endswith(SUFFIX):
            victim = self.victim
            before = os.stat(victim)
            while os.stat(victim).st_ctime_ns == before.st_ctime_ns:  # a timestamp tick may be needed
                with open(victim, "r+b") as handle:
                    handle.write(b"X" * before.st_size)
                os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
        return digest

    victim = ""


def test_a_file_rewritten_with_its_mtime_kept_after_its_copy_is_not_deleted(stick: Path, tmp_path: Path, scanner: Scanner, collector_key: X25519PrivateKey) -> None:
    target = stick / "dump.sql"
    target.write_bytes(LEAK)
    rewriting = RewritingQuarantine(str(tmp_path / "quarantine"), str(tmp_path / "released"), lambda: public_hex(collector_key), enabled=True)
    rewriting.victim = str(target)
    enforcement = quarantine_file(rewriting, scanner, target)
    assert enforcement["done"] is False and "changed" in enforcement["detail"], enforcement
    assert target.read_bytes() == b"X" * len(LEAK), "the rewritten file was deleted without a copy of what it holds"
    assert rewriting.held() == []


def test_a_file_swapped_for_a_fifo_after_its_scan_does_not_hang_the_quarantine(stick: Path, scanner: Scanner, quarantine: Quarantine) -> None:
    """Opening a fifo for reading waits for a writer: a user who swaps the matched file for one would
    park the scanner thread that quarantines for good."""
    target = stick / "dump.sql"
    target.write_bytes(LEAK)
    result = scanner.scan_path(str(target))
    assert result.status is Status.MATCH
    target.unlink()
    os.mkfifo(target)
    outcome: list[dict[str, Any] | None] = []
    worker = threading.Thread(target=lambda: outcome.append(quarantine.enforce(FileWork(path=str(target), channel="usb"), result)))
    worker.start()
    worker.join(20)
    if worker.is_alive():  # let it go before failing, so no thread is left behind
        os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
        worker.join()
        pytest.fail("the quarantine waited on a fifo")
    (enforcement,) = outcome
    assert enforcement is not None and enforcement["done"] is False and "not a regular file" in enforcement["detail"]
    assert quarantine.held() == []


def test_a_header_with_mistyped_fields_is_a_failed_command_not_an_exception(tmp_path: Path, quarantine: Quarantine) -> None:
    """Whatever a .dlpq's header holds, a command on it is reported: an exception out of ``execute``
    would end the device updater's thread, again at every heartbeat repeating the command."""
    quarantine_id = str(uuid.uuid4())
    os.makedirs(quarantine.directory, exist_ok=True)
    header = {"format": 1, "id": quarantine_id, "original_path": "/media/STICK/a", "size": "5", "sha256": "00" * 32, "ephemeral_key": "00" * 32,
              "chunk_size": 1 << 20, "nonce_prefix": "00000000", "mode": 0o600, "uid": 0, "gid": 0}  # fmt: skip
    Path(quarantine.directory, quarantine_id + SUFFIX).write_bytes(json.dumps(header).encode() + b"\n")
    for op in ("release", "delete"):
        report = quarantine.execute({"id": 9, "op": op, "quarantine_id": quarantine_id, "key": "00" * 32})
        assert report.enforcement["done"] is False and "not a quarantined file" in report.enforcement["detail"], report


def test_a_command_report_refused_by_a_full_work_queue_is_offered_again(stick: Path, tmp_path: Path, scanner: Scanner, quarantine: Quarantine) -> None:
    """The command is done once carried out, and never carried out again: if its report were dropped
    the collector would repeat the command forever and the file would stay "release requested"."""
    target = stick / "dump.sql"
    target.write_bytes(LEAK)
    held = quarantine_file(quarantine, scanner, target)["quarantine"]
    taken: list[Any] = []
    refusals = [True]

    def submit(work: Any) -> bool:  # the pipeline's submit, its queue full the first time
        if refusals:
            refusals.pop()
            return False
        taken.append(work)
        return True

    spool = Spool(str(tmp_path / "spool.db"), max_bytes=1 << 20)
    updater = DeviceUpdater(
        Link(Identity(str(tmp_path / "credentials.json")), lambda credentials: None),  # type: ignore[arg-type,return-value]
        PolicyHolder(), PolicyStore(str(tmp_path)), on_change=lambda: None, quarantine=quarantine, report=submit, spool=spool,
    )  # fmt: skip
    updater.start()
    try:
        updater.heard({"commands": [{"id": 7, "op": "delete", "quarantine_id": held["id"]}]})
        (report,) = wait_for(lambda: taken, timeout=20, message="the report offered again")
        assert report.enforcement["command"] == 7 and report.enforcement["done"] is True
    finally:
        updater.stop()
        spool.close()
