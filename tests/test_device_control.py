"""USB device control: the signed policy's checks and matching, and a real agent blocking, remounting
read-only and allowing loop-mounted ext4 and exFAT (FUSE) sticks.

The agent runs in its own mount namespace (``unshare -m``), as the packaged service does
(ProtectSystem=strict): what it does to its own view of a mount would not stop the user, so a
``cp`` from this test's namespace failing shows the superblock-wide mechanisms at work.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.credentials import Credentials, save
from agent.device_guard import DeviceGuard
from agent.device_policy import AUDIT, DevicePolicy, DevicePolicyError, DeviceRule, PolicyHolder, PolicyStore, decide, verify
from agent.sources.work import Device, DeviceChange, Work
from agent.volume_control import OpenDenier, is_read_only
from tests.agent_process import Agent, write_config
from tests.conftest import SECRET_WORD
from tests.loopdev import LoopMounts, require_mount_rights, require_tools
from tests.stack import Stack
from tests.waiting import wait_for

VENDOR = "acme-bpo"
ROOT = Path(__file__).resolve().parent.parent
ALLOWED_STICK = {"vendor_id": "0781", "product_id": "5567", "serial": "4C530001"}
NAMESPACE = ("unshare", "-m", "--propagation", "slave")
"""The agent's own mount namespace, receiving the mounts this test makes (the media folder is shared)."""


def public_hex(key: Ed25519PrivateKey | X25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def document(version: int, action: str, *, allowed: tuple[dict, ...] = (), exceptions: tuple[dict, ...] = (), vendor: str = VENDOR, quarantine_key: str | None = None) -> str:
    body = {
        "format": 1, "vendor": vendor, "version": version, "issued_at": iso(time.time()), "action": action,
        "allowed": list(allowed), "exceptions": list(exceptions), "quarantine_key": quarantine_key or public_hex(X25519PrivateKey.generate()),
    }  # fmt: skip
    return json.dumps(body)


def sign(key: Ed25519PrivateKey, text: str) -> str:
    return key.sign(text.encode()).hex()


# The policy itself ---------------------------------------------------------------------------


def stick(**identity: str | None) -> Device:
    return Device(mountpoint="/media/jdoe/STICK", **identity)  # type: ignore[arg-type]


def test_patterns_are_case_insensitive_globs_and_only_a_star_matches_the_unknown() -> None:
    rule = DeviceRule(vendor_id="0781", product_id="55*", serial="4c53????")
    assert rule.matches(stick(vendor_id="0781", product_id="5567", serial="4C530001"))
    assert not rule.matches(stick(vendor_id="0781", product_id="5467", serial="4C530001"))
    assert not rule.matches(stick(vendor_id="0781", product_id="5567", serial=None)), "a pattern needs a known serial"
    assert DeviceRule(vendor_id="0781", serial="*").matches(stick(vendor_id="0781")), "* (and no pattern) match an unknown value"
    assert not DeviceRule(vendor_id="0781").matches(stick(vendor_id=None))


def test_decide_allows_listed_devices_and_live_exceptions_only(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    text = document(
        3, "block", allowed=({"vendor_id": "0781", "serial": "4C53*", "note": "IT sticks"},),
        exceptions=({"id": 9, "vendor_id": "abcd", "product_id": "0001", "serial": "X1", "expires_at": iso(2_000_000_000), "reason": "audit", "granted_by": "admin"},),
    )  # fmt: skip
    policy = verify(text, sign(key, text), public_key_hex=public_hex(key), vendor=VENDOR)
    action, enforcement = decide(policy, stick(**ALLOWED_STICK), now=1_900_000_000)
    assert action == "allow" and enforcement is not None
    assert (enforcement["action"], enforcement["rule"], enforcement["detail"]) == ("allow", "allowed 0781:*:4C53*", "IT sticks")
    action, enforcement = decide(policy, stick(vendor_id="abcd", product_id="0001", serial="X1"), now=1_900_000_000)
    assert action == "allow" and enforcement is not None and enforcement["expires_at"] == "2033-05-18T03:33:20Z"
    assert decide(policy, stick(vendor_id="abcd", product_id="0001", serial="X1"), now=2_000_000_001) == ("block", None)
    assert decide(policy, stick(), now=1_900_000_000) == ("block", None)
    assert decide(AUDIT, stick(), now=0) == ("audit", None)


def test_forged_other_vendor_older_and_malformed_documents_are_refused(tmp_path: Path) -> None:
    key, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    good = document(5, "read-only")
    assert verify(good, sign(key, good), public_key_hex=public_hex(key), vendor=VENDOR, held_version=5).version == 5
    cases = {
        "signature": (good, sign(forger, good), 0),
        "signature ": (good.replace("read-only", "audit"), sign(key, good), 0),
        "vendor 'rival-bpo'": (document(6, "audit", vendor="rival-bpo"), None, 0),
        "version 5 is older than version 6": (good, None, 6),
        "action": (document(7, "shred"), None, 0),
    }
    for why, (text, signature, held) in cases.items():
        with pytest.raises(DevicePolicyError, match=why.strip()):
            verify(text, signature or sign(key, text), public_key_hex=public_hex(key), vendor=VENDOR, held_version=held)
    # A lone surrogate (JSON's "\ud800" from whoever answers the fetch) has no UTF-8 bytes to verify:
    # a refusal, not an exception that ends the updater's thread.
    with pytest.raises(DevicePolicyError, match="UTF-8"):
        verify(good[:-1] + ',"x":"\ud800"}', "00" * 64, public_key_hex=public_hex(key), vendor=VENDOR)
    store = PolicyStore(str(tmp_path))
    store.save(good, sign(key, good), "etag-5")
    loaded = store.load(public_key_hex=public_hex(key), vendor=VENDOR)
    assert loaded is not None and loaded[0].action == "read-only" and loaded[1] == "etag-5"
    assert os.stat(store.path).st_mode & 0o777 == 0o600
    Path(store.path).write_text(Path(store.path).read_text().replace("read-only", "audit"))
    with pytest.raises(DevicePolicyError, match="signature"):
        store.load(public_key_hex=public_hex(key), vendor=VENDOR)


# A real agent and real sticks ----------------------------------------------------------------


def fake_usb_sysfs(sys_root: Path, loop: str, vendor_id: str, product_id: str, serial: str) -> None:
    """``sys_root/dev/block/MAJ:MIN`` of ``loop`` leading to a USB device with this identity: a loop
    image the agent takes for a stick of that make (this machine has no USB hardware)."""
    rdev = os.stat(loop).st_rdev
    usb = sys_root / "devices/pci0000:00/0000:00:14.0/usb1" / f"1-{os.minor(rdev)}"
    disk = usb / "1-2:1.0/host3/target3:0:0/3:0:0:0/block" / os.path.basename(loop)
    disk.mkdir(parents=True)
    for name, value in {"idVendor": vendor_id, "idProduct": product_id, "serial": serial, "manufacturer": "SanDisk", "product": "Cruzer"}.items():
        (usb / name).write_text(value + "\n")
    (disk / "removable").write_text("1\n")
    (sys_root / "dev/block" / f"{os.major(rdev)}:{os.minor(rdev)}").symlink_to(disk)


@dataclass
class Bench:
    """A removable root shared into the agent's namespace, loop sticks, the agent's home and signing key."""

    home: Path
    media: Path
    sys_root: Path
    mounts: LoopMounts
    key: Ed25519PrivateKey
    config: Path
    agents: list[Agent]
    base_config: str = ""

    def store(self, text: str, signature: str | None = None) -> None:
        """The policy as a previous run kept it (the agent has no collector to ask)."""
        PolicyStore(str(self.home / "bundle")).save(text, signature or sign(self.key, text), "")

    def agent(self, *usb_lines: str) -> Agent:
        """A running agent; ``usb_lines`` add keys to its ``[usb]`` section."""
        self.config.write_text(self.base_config.replace("[usb]\n", "[usb]\n" + "".join(line + "\n" for line in usb_lines)))
        agent = Agent(self.config, prefix=NAMESPACE)
        self.agents.append(agent)
        wait_for(lambda: "usb" in agent.status().get("sources", {}), timeout=15, message="usb source up")
        return agent

    def stick(self, name: str, fs: str = "ext4", identity: dict[str, str] | None = None) -> Path:
        image = self.mounts.image(f"{name}.img", fs, label=name)
        target = self.media / name
        if fs == "exfat":
            self.mounts.mount_exfat_fuse(image, target)
        else:
            loop = self.mounts.attach(image)
            if identity:
                fake_usb_sysfs(self.sys_root, loop, **identity)
            self.mounts.mount_device(loop, target)
        return target


@pytest.fixture
def bench(tmp_path: Path, rules_dir: Path) -> Iterator[Bench]:
    require_mount_rights()
    require_tools("mkfs.ext4", "mkfs.exfat", "unshare")
    media = tmp_path / "media"
    media.mkdir()
    sys_root = tmp_path / "sys"
    for sub in ("dev/block", "class/block"):
        (sys_root / sub).mkdir(parents=True)
    key = Ed25519PrivateKey.generate()
    credentials = Credentials(
        server_url="http://127.0.0.1:9", agent_id="a-1", credential="dlpa_offline", vendor=VENDOR,
        signing_public_key=public_hex(key), heartbeat_interval_s=60, enrolled_at=iso(time.time()),
    )  # fmt: skip
    save(str(tmp_path / "credentials.json"), credentials)
    config = write_config(tmp_path, rules_dir)
    usb = "\n".join(["[usb]", "enabled = true", f'removable_roots = ["{media}"]', f'sysfs_root = "{sys_root}"', "poll_interval_ms = 200"])
    config.write_text(config.read_text().replace("[usb]\nenabled = false", usb))
    with contextlib.ExitStack() as cleanup:
        # The media folder is a shared mount, so sticks mounted under it here reach the agent's namespace.
        subprocess.run(["mount", "--bind", str(media), str(media)], check=True)
        cleanup.callback(subprocess.run, ["umount", "-l", str(media)], check=False)
        subprocess.run(["mount", "--make-shared", str(media)], check=True)
        mounts = cleanup.enter_context(LoopMounts(tmp_path))
        made = Bench(tmp_path, media, sys_root, mounts, key, config, [], config.read_text())
        yield made
        for agent in made.agents:
            agent.stop()


def copy(target: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["cp", "/etc/hostname", str(target / "copied.txt")], capture_output=True, text=True, timeout=30)


def device_events(agent: Agent, kind: str, mountpoint: Path) -> list[dict[str, Any]]:
    return [e for e in agent.events() if e["type"] == kind and e["device"]["mountpoint"] == str(mountpoint)]


def test_block_refuses_a_copy_to_unknown_ext4_and_exfat_sticks_and_allows_a_listed_one(bench: Bench) -> None:
    allowed = {"vendor_id": ALLOWED_STICK["vendor_id"], "product_id": "55*", "serial": "4C53*", "note": "IT-issued"}
    bench.store(document(4, "block", allowed=(allowed,)))
    agent = bench.agent()
    unknown = bench.stick("UNKNOWN")
    card = bench.stick("CARD", "exfat")
    issued = bench.stick("ISSUED", identity=ALLOWED_STICK)

    for target in (unknown, card):
        (event,) = wait_for(lambda t=target: device_events(agent, "usb.blocked", t), timeout=15, message=f"usb.blocked for {target.name}")
        assert event["enforcement"]["action"] == "block" and event["enforcement"]["done"] is True
        assert "every open denied" in event["enforcement"]["detail"] and "version 4" in event["enforcement"]["detail"]
        refused = copy(target)
        assert refused.returncode != 0 and "Operation not permitted" in refused.stderr, refused
    assert device_events(agent, "usb.mount", card)[0]["device"]["fstype"] == "fuseblk"

    (mounted,) = wait_for(lambda: device_events(agent, "usb.mount", issued), timeout=15, message="usb.mount of the listed stick")
    assert {k: mounted["device"][k] for k in ALLOWED_STICK} == ALLOWED_STICK and mounted["device"]["bus"] == "usb"
    assert mounted["enforcement"] == {"action": "allow", "mode": "enforce", "done": True, "detail": "IT-issued", "rule": "allowed 0781:55*:4C53*"}
    assert copy(issued).returncode == 0 and (issued / "copied.txt").exists()
    assert not device_events(agent, "usb.blocked", issued) and not device_events(agent, "usb.readonly", issued)


def test_read_only_after_a_restart_without_collector_including_sticks_mounted_meanwhile(bench: Bench) -> None:
    bench.store(document(2, "read-only"))
    first = bench.agent()
    card = bench.stick("CARD", "exfat")
    (event,) = wait_for(lambda: device_events(first, "usb.readonly", card), timeout=15, message="usb.readonly for the exFAT card")
    assert event["enforcement"]["done"] is True and "remounted read-only" in event["enforcement"]["detail"]
    refused = copy(card)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
    first.stop()

    early = bench.stick("EARLY")  # mounted while no agent runs: decided when the next one starts
    second = bench.agent()
    (event,) = wait_for(lambda: device_events(second, "usb.readonly", early), timeout=15, message="usb.readonly at start")
    assert event["enforcement"]["done"] is True and event["device"]["fstype"] == "ext4"
    refused = copy(early)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
    assert "device policy version 2: read-only" in second.status()["sources"]["device-policy"]["message"]


def test_an_exception_allows_one_device_until_it_expires(bench: Bench) -> None:
    expires = time.time() + 20
    grant = {"id": 7, **ALLOWED_STICK, "expires_at": iso(expires), "reason": "firmware update", "granted_by": "admin"}
    bench.store(document(3, "block", exceptions=(grant,)))
    agent = bench.agent()
    other = {**ALLOWED_STICK, "serial": "4C530002"}
    excepted = bench.stick("EXCEPTED", identity=ALLOWED_STICK)
    sibling = bench.stick("SIBLING", identity=other)

    (mounted,) = wait_for(lambda: device_events(agent, "usb.mount", excepted), timeout=15, message="usb.mount")
    assert mounted["enforcement"]["rule"] == "exception 7 0781:5567:4C530001"
    assert mounted["enforcement"]["expires_at"] == iso(expires)
    wait_for(lambda: device_events(agent, "usb.blocked", sibling), timeout=15, message="the same model with another serial blocked")
    assert time.time() < expires, "too slow to see the exception in force"
    assert copy(excepted).returncode == 0

    (event,) = wait_for(lambda: device_events(agent, "usb.blocked", excepted), timeout=40, message="blocked once the exception expired")
    assert event["enforcement"]["done"] is True
    refused = subprocess.run(["cp", "/etc/hostname", str(excepted / "after.txt")], capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr, refused


def test_a_forged_stored_policy_is_not_enforced(bench: Bench) -> None:
    text = document(9, "block")
    bench.store(text, sign(Ed25519PrivateKey.generate(), text))
    agent = bench.agent()
    target = bench.stick("STICK")
    wait_for(lambda: device_events(agent, "usb.mount", target), timeout=15, message="usb.mount")
    assert copy(target).returncode == 0
    health = agent.status()["sources"]["device-policy"]
    assert health["state"] == "degraded" and "stored device policy not used" in health["message"]
    assert not device_events(agent, "usb.blocked", target)




def test_end_to_end_admin_blocks_through_a_collector_and_releases_a_quarantined_file(bench: Bench, stack: Stack) -> None:
    settings = stack.data_dir / "server.toml"
    settings.write_text(settings.read_text().replace("heartbeat_interval_s = 60", "heartbeat_interval_s = 5"))
    serve = stack.collector()
    stack.enroll(bench.config, serve.url)
    agent = bench.agent('on_match = "quarantine"')
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    api = f"{serve.url}/api/v1"
    assert "no device policy: audit" in agent.status()["sources"]["device-policy"]["message"]

    allowed = [{"vendor_id": "0781", "product_id": "5567", "serial": "4C53*", "note": "IT-issued"}]
    response = requests.put(f"{api}/vendors/{VENDOR}/device-policy", json={"action": "block", "allowed": allowed}, headers=admin, timeout=10)
    assert response.status_code == 200, response.text
    # Picked up on a heartbeat that names the new version (every 5 s here).
    wait_for(lambda: "version 1: block" in agent.status()["sources"]["device-policy"]["message"], timeout=30, message="policy in force")

    def at_collector(kind: str) -> list[dict[str, Any]]:
        """Events the agent shipped (its spool forgets them once they are delivered)."""
        return requests.get(f"{api}/events", params={"type": kind, "limit": 1000}, headers=admin, timeout=10).json()["items"]

    unknown = bench.stick("UNKNOWN")
    (blocked,) = wait_for(lambda: at_collector("usb.blocked"), timeout=30, message="usb.blocked at the collector")
    assert blocked["device"]["mountpoint"] == str(unknown) and blocked["enforcement"]["done"] is True
    refused = copy(unknown)
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr, refused

    issued = bench.stick("ISSUED", identity=ALLOWED_STICK)
    wait_for(lambda: f"usb:{issued}" in agent.status().get("sources", {}), timeout=15, message="issued stick watched")
    leak = issued / "customer" / "settle.go"
    leak.parent.mkdir()
    content = b"package ledger\n// " + SECRET_WORD.encode() + b"\n"
    leak.write_bytes(content)

    def held() -> list[dict[str, Any]]:
        items = requests.get(f"{api}/quarantine", params={"vendor": VENDOR}, headers=admin, timeout=10).json()["items"]
        return [item for item in items if item["original_path"] == str(leak) and item["state"] == "held"]

    (item,) = wait_for(held, timeout=30, message="the quarantined file at the collector")
    assert not leak.exists() and item["sha256"] == hashlib.sha256(content).hexdigest()
    response = requests.post(f"{api}/quarantine/{item['quarantine_id']}/release", headers=admin, timeout=10)
    assert response.status_code == 202, response.text

    # The release writes in place, so the name exists a moment before all of its bytes do.
    wait_for(lambda: leak.exists() and leak.read_bytes() == content, timeout=30, message="the file released back onto the stick")

    def state() -> str:
        items = requests.get(f"{api}/quarantine", params={"vendor": VENDOR}, headers=admin, timeout=10).json()["items"]
        return next(i["state"] for i in items if i["quarantine_id"] == item["quarantine_id"])

    wait_for(lambda: state() == "released", timeout=30, message="the release reported to the collector")
    (report,) = at_collector("quarantine.released")
    assert (report["path"], report["enforcement"]["command"] > 0, report["enforcement"]["quarantine"]["id"]) == (str(leak), True, item["quarantine_id"])


def test_a_newer_policy_decides_mounted_volumes_again_both_ways(tmp_path: Path) -> None:
    require_mount_rights()
    key = Ed25519PrivateKey.generate()

    def policy(version: int, action: str) -> DevicePolicy:
        text = document(version, action)
        return verify(text, sign(key, text), public_key_hex=public_hex(key), vendor=VENDOR)

    changes: list[Work] = []

    def emit(work: Work) -> bool:
        changes.append(work)
        return True

    holder = PolicyHolder(policy(1, "audit"))
    denier = OpenDenier()
    guard = DeviceGuard(holder, emit, denier)
    with LoopMounts(tmp_path) as mounts:
        target = mounts.mount_loop(mounts.image("stick.img"), tmp_path / "STICK")
        device = Device(mountpoint=str(target), fstype="ext4")
        assert guard.admit(device) == (None, None) and copy(target).returncode == 0
        holder.replace(policy(2, "read-only"), "")
        guard.redecide([device])
        (change,) = changes
        assert isinstance(change, DeviceChange) and change.type == "usb.readonly" and change.enforcement is not None
        assert change.enforcement["done"] is True and is_read_only(str(target))
        holder.replace(policy(3, "audit"), "")
        guard.redecide([device])
        assert not is_read_only(str(target)) and copy(target).returncode == 0 and len(changes) == 1
    denier.stop()


def test_the_open_denier_answers_with_its_group_past_descriptor_1024(tmp_path: Path) -> None:
    """An agent holding many descriptors (watches, sockets, a spool) gets a fanotify group numbered
    above select()'s limit: its answering loop must still run, or every open on the stick waits forever."""
    require_mount_rights()
    spare = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(1100)]
    denier = OpenDenier()
    try:
        with LoopMounts(tmp_path) as mounts:
            target = mounts.mount_loop(mounts.image("stick.img"), tmp_path / "STICK")
            (target / "kept.txt").write_text("kept\n")
            denier.start()
            denier.block(str(target))
            for fd in spare:
                os.close(fd)
            spare = []
            try:
                opened = subprocess.run(["cat", str(target / "kept.txt")], capture_output=True, text=True, timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail("an open on the blocked volume was never answered")
            assert opened.returncode != 0 and "not permitted" in opened.stderr, opened
            assert denier.is_alive() and denier.denied >= 1
            denier.stop()
    finally:
        for fd in spare:
            os.close(fd)
        denier.stop()


DENIER_AT_ITS_LIMIT = """
import os, resource, sys
from agent.volume_control import OpenDenier
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
denier = OpenDenier()
denier.start()
denier.block(sys.argv[1])
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
print("ready", flush=True)
sys.stdin.read()
for fd in held:
    os.close(fd)
denier.stop()
print("alive" if not denier.lost else "lost", flush=True)
"""


def test_the_open_denier_outlives_an_agent_out_of_descriptors(tmp_path: Path) -> None:
    """With the agent at its descriptor limit the kernel cannot give it the event's file: it denies
    that open itself and the read fails (EMFILE). The loop must go on answering, or the next open
    on the stick waits forever."""
    require_mount_rights()
    with LoopMounts(tmp_path) as mounts:
        target = mounts.mount_loop(mounts.image("stick.img"), tmp_path / "STICK")
        (target / "kept.txt").write_text("kept\n")
        agent = subprocess.Popen(
            [sys.executable, "-c", DENIER_AT_ITS_LIMIT, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        try:
            assert agent.stdout is not None and agent.stdout.readline().strip() == "ready", agent.stderr
            for _ in range(3):
                try:
                    opened = subprocess.run(["cat", str(target / "kept.txt")], capture_output=True, text=True, timeout=20)
                except subprocess.TimeoutExpired:
                    pytest.fail("an open on the blocked volume was never answered")
                assert opened.returncode != 0, opened
            out, err = agent.communicate("", timeout=30)
            assert out.strip() == "alive", err
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
