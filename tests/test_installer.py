"""The agent as IT rolls it out: the one-file binary, the .deb and install.sh, against a real collector.

The binary is built once per session (about half a minute); every test here runs that binary,
never the Python sources, so frozen-mode quirks (package data, shared libraries, CA bundle,
signal forwarding by the bootloader) are what is tested.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from agent import __version__
from tests.collector_env import ServeProcess
from tests.stack import cli, produce, spool_depth
from tests.tlscerts import self_signed
from tests.waiting import wait_for

pytestmark = pytest.mark.installer

ROOT = Path(__file__).resolve().parent.parent
LINUX = ROOT / "installer" / "linux"
SERVER_TOP_LEVEL = {
    "server", "signatures", "fastapi", "starlette", "uvicorn", "alembic", "psycopg", "argon2", "prometheus_client",
    "geoip2fast", "jinja2", "sqlalchemy", "mako", "tkinter", "unittest", "pydoc", "pytest", "_pytest", "PyInstaller",
}
MARKED = "Board memo\n\nPROPRIETARY AND CONFIDENTIAL\n\nDo not forward.\n"
CLEAN = "Lunch menu for Friday: soup, salad, bread.\n"
# Run a program with the kernel's MemoryDenyWriteExecute (PR_SET_MDWE, Linux 6.3+), as the unit asks.
MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.fixture(scope="session")
def agent_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dlp-agent`` built from installer/dlp-agent.spec, as ``make agent-binary`` builds it."""
    work = tmp_path_factory.mktemp("pyinstaller")
    build = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN", "--distpath", str(work / "dist"),
         "--workpath", str(work / "build"), str(ROOT / "installer" / "dlp-agent.spec")],
        capture_output=True, text=True, timeout=900, cwd=work,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return work / "dist" / "dlp-agent"


def run_binary(binary: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


@dataclass
class Collector:
    url: str
    data_dir: Path
    api_token: str

    def token(self, uses: int = 1) -> str:
        result = cli("server.cli", "token", "create", "--data-dir", str(self.data_dir), "--vendor", "acme-bpo", "--uses", str(uses), "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["token"]

    def get(self, path: str) -> list[dict]:
        answer = requests.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.api_token}"}, timeout=10)
        answer.raise_for_status()
        return answer.json()["items"]

    def agent_ids(self) -> set[str]:
        return {agent["id"] for agent in self.get("/api/v1/agents")}


@pytest.fixture(scope="module")
def live_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """``dlp-server serve`` on loopback (SQLite), shared by this module's tests."""
    data_dir = tmp_path_factory.mktemp("collector") / "data"
    init = cli("server.cli", "init", "--data-dir", str(data_dir), "--json")
    assert init.returncode == 0, init.stderr
    serve = ServeProcess(data_dir, dict(os.environ))
    try:
        serve.wait_ready()
        yield Collector(serve.url, data_dir, json.loads(init.stdout)["api_token"])
    finally:
        serve.stop()


# The binary ---------------------------------------------------------------------------------


def test_binary_reports_its_version_quickly_and_is_small(agent_binary: Path, tmp_path: Path) -> None:
    for args in (["version"], ["--version"]):
        result = run_binary(agent_binary, *args, cwd=tmp_path)
        assert (result.returncode, result.stdout.strip()) == (0, f"dlp-agent {__version__}"), result.stderr
    assert agent_binary.stat().st_size <= 35 * 1024 * 1024
    # The start-up target; the fastest of five runs, so a busy machine does not fail it.
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        run_binary(agent_binary, "version", cwd=tmp_path)
        timings.append(time.perf_counter() - started)
    assert min(timings) <= 1.0, timings


def test_binary_scans_with_the_starter_packs_it_carries(agent_binary: Path, tmp_path: Path) -> None:
    marked, clean = tmp_path / "memo.txt", tmp_path / "menu.txt"
    marked.write_text(MARKED)
    clean.write_text(CLEAN)
    # From an unrelated folder: the packs must come from inside the binary, not a checkout nearby.
    found = run_binary(agent_binary, "scan", "--json", str(marked), cwd=tmp_path)
    assert found.returncode == 1, found.stderr
    (result,) = [json.loads(line) for line in found.stdout.splitlines()]
    assert result["status"] == "match"
    assert [(m["namespace"], m["rule"]) for m in result["matches"]] == [("confidentiality", "proprietary_and_confidential")]
    nothing = run_binary(agent_binary, "scan", "--json", str(clean), cwd=tmp_path)
    assert nothing.returncode == 0, nothing.stderr
    assert json.loads(nothing.stdout)["status"] == "clean"


def test_binary_runs_without_writable_executable_memory(agent_binary: Path, tmp_path: Path) -> None:
    """The unit sets MemoryDenyWriteExecute=yes: libyara, ctypes and the bootloader must cope."""
    marked = tmp_path / "memo.txt"
    marked.write_text(MARKED)
    result = subprocess.run([sys.executable, "-c", MDWE_EXEC, str(agent_binary), "scan", "--json", str(marked)], capture_output=True, text=True, timeout=120)
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["matches"][0]["rule"] == "proprietary_and_confidential"


def test_binary_carries_no_collector_code(agent_binary: Path) -> None:
    from PyInstaller.archive.readers import CArchiveReader

    archive = CArchiveReader(str(agent_binary))
    modules = set(archive.open_embedded_archive("PYZ.pyz").toc)
    assert {"agent.cli.scan", "agent.cli.run", "agent.daemon", "agent.shipper"} <= modules
    assert {m.split(".")[0] for m in modules} & SERVER_TOP_LEVEL == set()
    files = {name for name, entry in archive.toc.items() if entry[-1] in "bx"}
    assert {name.split("/")[0] for name in files} & SERVER_TOP_LEVEL == {"signatures"}
    # Of signatures/ only the starter packs, as data.
    packs = sorted(f"signatures/packs/{p.name}" for p in (ROOT / "signatures" / "packs").glob("*.yar"))
    assert packs and sorted(f for f in files if f.startswith("signatures/")) == packs
    assert "certifi/cacert.pem" in files  # requests verifies the collector against it by default
    assert any(f.startswith("yara") and f.endswith(".so") for f in files)


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_deb_depends_on_the_glibc_the_binary_needs(agent_binary: Path, tmp_path: Path) -> None:
    from PyInstaller.archive.readers import CArchiveReader

    archive = CArchiveReader(str(agent_binary))
    libraries = [agent_binary]
    for name, entry in archive.toc.items():
        if entry[-1] == "b":
            libraries.append(tmp_path / name.replace("/", "_"))
            libraries[-1].write_bytes(archive.extract(name))
    symbols = subprocess.run(["objdump", "-T", *map(str, libraries)], capture_output=True, text=True).stdout
    needed = max(tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+\.\d+)", symbols))
    declared = re.search(r"libc6 \(>= (\d+\.\d+)\)", (LINUX / "debian" / "control.in").read_text()).group(1)
    assert needed <= tuple(map(int, declared.split("."))), f"the binary needs GLIBC {needed}, the package declares {declared}"


def test_shipped_default_config_is_valid_and_absolute(agent_binary: Path, tmp_path: Path) -> None:
    result = run_binary(agent_binary, "check-config", "--config", str(LINUX / "agent.toml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["spool"]["path"] == "/var/lib/dlp-agent/spool.db"
    assert config["server"]["credentials"] == "/var/lib/dlp-agent/credentials.json"
    assert config["rules"]["bundle_dir"] == "/var/lib/dlp-agent/bundle"
    assert config["files"]["watch"] == ["/home"]
    assert config["clipboard"]["enabled"] is False


def test_binary_enrolls_ships_and_stops_cleanly(agent_binary: Path, live_collector: Collector, tmp_path: Path) -> None:
    watch = tmp_path / "Desktop"
    watch.mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[files]\nwatch = ["{watch}"]\nquiet_ms = 200\n[usb]\nenabled = false\n[clipboard]\nenabled = false\n'
        '[spool]\npath = "spool.db"\n[server]\ncredentials = "credentials.json"\n[scan]\nnice = 0\n'
    )
    enroll = run_binary(agent_binary, "enroll", "--config", str(config), "--server", live_collector.url, "--token", live_collector.token(), cwd=tmp_path)
    assert enroll.returncode == 0, enroll.stderr
    agent_id = json.loads((tmp_path / "credentials.json").read_text())["agent_id"]
    assert agent_id in live_collector.agent_ids()

    log = open(tmp_path / "agent.log", "wb")
    process = subprocess.Popen([str(agent_binary), "-v", "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        def status() -> dict:
            answer = run_binary(agent_binary, "status", "--config", str(config), "--json")
            return json.loads(answer.stdout) if answer.returncode == 0 else {}

        up = wait_for(lambda: status().get("running") or process.poll() is not None, timeout=30, interval=0.2, message="agent running")
        assert process.poll() is None and up, (tmp_path / "agent.log").read_text()
        daemon_pid = status()["pid"]
        (watch / "memo.txt").write_text(MARKED)

        def shipped() -> list[dict]:
            return [e for e in live_collector.get(f"/api/v1/events?agent={agent_id}") if e["path"] == str(watch / "memo.txt")]

        (event,) = wait_for(shipped, timeout=60, interval=0.2, message="the event at the collector")
        assert event["matches"][0]["rule"] == "proprietary_and_confidential"
        assert event["channel"] == "file"
        # SIGTERM reaches the bootloader (as from systemd); it forwards it and exits with the agent's status.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "agent.log").read_text()
        assert not _alive(daemon_pid), "the unpacked agent outlived its bootloader"
        assert status()["running"] is False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# The systemd unit ---------------------------------------------------------------------------


def unit_keys(text: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def test_unit_is_hardened_and_verifies(agent_binary: Path, tmp_path: Path) -> None:
    template = (LINUX / "dlp-agent.service.in").read_text()
    keys = unit_keys(template.replace("@BINDIR@", "/usr/bin"))
    expected = {
        "Type": ["simple"], "ExecStart": ["/usr/bin/dlp-agent run --config /etc/dlp-agent/agent.toml"], "Restart": ["on-failure"],
        "User": ["dlp-agent"], "AmbientCapabilities": ["CAP_DAC_READ_SEARCH CAP_SYS_ADMIN CAP_NET_ADMIN CAP_SYS_PTRACE"],
        "CapabilityBoundingSet": ["CAP_DAC_READ_SEARCH CAP_SYS_ADMIN CAP_NET_ADMIN CAP_SYS_PTRACE"], "ProtectProc": ["default"],
        "SystemCallFilter": ["@system-service", "~@privileged", "fanotify_init fanotify_mark open_by_handle_at mount umount2"],
        "NoNewPrivileges": ["yes"], "StateDirectory": ["dlp-agent"], "StateDirectoryMode": ["0700"], "LogsDirectory": ["dlp-agent"],
        "ProtectSystem": ["strict"], "ProtectHome": ["read-only"], "PrivateTmp": ["yes"], "ProtectKernelTunables": ["yes"],
        "ProtectKernelModules": ["yes"], "ProtectControlGroups": ["yes"], "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"],
        "LockPersonality": ["yes"], "MemoryDenyWriteExecute": ["yes"], "SystemCallArchitectures": ["native"],
        "WantedBy": ["multi-user.target"],
    }
    assert {key: keys.get(key) for key in expected} == expected
    # Host mounts (USB sticks) must propagate into the service's namespace.
    assert not {"PrivateMounts", "MountFlags", "PrivateDevices", "PrivateUsers"} & set(keys)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax was not verified")
    # verify checks that ExecStart's program exists, so point it at the binary just built.
    unit = tmp_path / "dlp-agent.service"
    unit.write_text(template.replace("@BINDIR@", str(agent_binary.parent)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


# The .deb -----------------------------------------------------------------------------------

NEWER = f"{__version__}+upgrade1"


@pytest.fixture(scope="module")
def debs(agent_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The package at the agent's version and a newer one (same binary, version override)."""
    out = tmp_path_factory.mktemp("debs")
    built = {}
    for version in (None, NEWER):
        args = [str(LINUX / "build-deb.sh"), str(agent_binary), str(out), *([version] if version else [])]
        result = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        built[version or __version__] = Path(result.stdout.strip())
    return built


def test_deb_layout_and_control(debs: dict[str, Path], tmp_path: Path) -> None:
    deb = debs[__version__]
    assert deb.name == f"dlp-agent_{__version__}_{subprocess.check_output(['dpkg', '--print-architecture'], text=True).strip()}.deb"
    listing = {}
    for line in subprocess.check_output(["dpkg-deb", "-c", str(deb)], text=True).splitlines():
        mode, owner, *_, path = line.split()
        listing[path.lstrip(".")] = (mode, owner)
    assert listing["/usr/bin/dlp-agent"] == ("-rwxr-xr-x", "root/root")
    assert listing["/lib/systemd/system/dlp-agent.service"] == ("-rw-r--r--", "root/root")
    assert listing["/etc/dlp-agent/agent.toml"] == ("-rw-r--r--", "root/root")
    fields = {}
    for name in ("Package", "Version", "Depends", "Recommends"):
        fields[name] = subprocess.check_output(["dpkg-deb", "-f", str(deb), name], text=True).strip()
    assert fields["Package"] == "dlp-agent" and fields["Version"] == __version__
    assert "libc6" in fields["Depends"] and "util-linux" in fields["Recommends"]
    assert subprocess.check_output(["dpkg-deb", "-f", str(debs[NEWER]), "Version"], text=True).strip() == NEWER
    assert subprocess.check_output(["dpkg-deb", "-I", str(deb), "conffiles"], text=True).split() == ["/etc/dlp-agent/agent.toml"]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    assert (tmp_path / "etc/dlp-agent/agent.toml").read_text() == (LINUX / "agent.toml").read_text()
    assert (tmp_path / "lib/systemd/system/dlp-agent.service").read_text() == (LINUX / "dlp-agent.service.in").read_text().replace("@BINDIR@", "/usr/bin")


def dpkg_root(path: Path) -> Path:
    """An empty system for ``dpkg --root``: dpkg's database and the files useradd --prefix edits."""
    for directory in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc", "var/log"):
        (path / directory).mkdir(parents=True, exist_ok=True)
    for name in ("status", "available"):
        (path / "var/lib/dpkg" / name).touch()
    (path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (path / "etc/group").write_text("root:x:0:\n")
    return path


def dpkg(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # --force-script-chrootless: run the maintainer scripts on this system with DPKG_ROOT=root
    #   instead of chrooting into a root that has no shell.
    # --force-depends: the empty root has no libc6, zlib1g or passwd package to satisfy Depends.
    command = ["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def passwd_entry(root: Path, user: str) -> list[str] | None:
    for line in (root / "etc/passwd").read_text().splitlines():
        if line.split(":")[0] == user:
            return line.split(":")
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="the maintainer scripts create a user and chown files: needs root")
def test_deb_enrolls_upgrades_keeping_state_and_purges(debs: dict[str, Path], live_collector: Collector, tmp_path: Path) -> None:
    root = dpkg_root(tmp_path / "root")
    state = root / "var/lib/dlp-agent"
    before = live_collector.agent_ids()
    dpkg(root, "-i", str(debs[__version__]), env={"DLP_SERVER": live_collector.url, "DLP_TOKEN": live_collector.token()})

    user = passwd_entry(root, "dlp-agent")
    assert user is not None and user[6] == "/usr/sbin/nologin"
    credentials = state / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert (credentials.stat().st_uid, state.stat().st_uid) == (int(user[2]), int(user[2]))
    agent_id = json.loads(credentials.read_text())["agent_id"]
    assert live_collector.agent_ids() - before == {agent_id}

    # Undelivered events, and an admin's edit of the conffile, must survive the upgrade.
    produce(state / "spool.db", 3)
    config = root / "etc/dlp-agent/agent.toml"
    config.write_text(config.read_text().replace('watch = ["/home"]', 'watch = ["/home", "/srv/shared"]'))
    identity = credentials.read_bytes()
    # A rollout tool that passes the token again must not make a second agent of this machine.
    upgrade = dpkg(root, "-i", str(debs[NEWER]), env={"DLP_SERVER": live_collector.url, "DLP_TOKEN": live_collector.token()})
    assert "already enrolled" in upgrade.stderr
    status = dpkg(root, "-s", "dlp-agent").stdout
    assert f"Version: {NEWER}" in status and "Status: install ok installed" in status
    assert credentials.read_bytes() == identity
    assert spool_depth(state / "spool.db") == 3
    assert '"/srv/shared"' in config.read_text()
    assert live_collector.agent_ids() - before == {agent_id}

    dpkg(root, "--purge", "dlp-agent")
    for gone in ("var/lib/dlp-agent", "var/log/dlp-agent", "etc/dlp-agent", "usr/bin/dlp-agent", "lib/systemd/system/dlp-agent.service"):
        assert not (root / gone).exists(), gone
    assert passwd_entry(root, "dlp-agent") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="the maintainer scripts create a user and chown files: needs root")
def test_deb_into_an_image_root_records_the_ca_at_its_installed_path(debs: dict[str, Path], tmp_path: Path) -> None:
    """Enrolling while assembling an image (dpkg --root) must leave credentials that work once the image boots."""
    cert, key = self_signed(tmp_path / "tls")
    data_dir = tmp_path / "collector"
    assert cli("server.cli", "init", "--data-dir", str(data_dir), "--json").returncode == 0
    serve = ServeProcess(data_dir, dict(os.environ), tls=(cert, key))
    try:
        serve.wait_ready()
        token = Collector(serve.url, data_dir, "").token()
        root = dpkg_root(tmp_path / "root")
        dpkg(root, "-i", str(debs[__version__]), env={"DLP_SERVER": serve.url, "DLP_TOKEN": token, "DLP_CA": str(cert)})
    finally:
        serve.stop()
    credentials = root / "var/lib/dlp-agent/credentials.json"
    assert json.loads(credentials.read_text())["ca_file"] == "/etc/dlp-agent/ca.pem"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert (root / "etc/dlp-agent/ca.pem").read_bytes() == cert.read_bytes()


# install.sh ---------------------------------------------------------------------------------


def install_sh(*args: str, destdir: Path, token_env: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DLP_TOKEN"}
    env["DESTDIR"] = str(destdir)
    if token_env is not None:
        env["DLP_TOKEN"] = token_env
    return subprocess.run(["sh", str(LINUX / "install.sh"), *args], capture_output=True, text=True, timeout=120, env=env)


def test_install_sh_refuses_incomplete_arguments(agent_binary: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    missing_server = install_sh("--token", "dlpe_x", "--binary", str(agent_binary), destdir=dest)
    assert missing_server.returncode == 1 and "--server URL is required" in missing_server.stderr
    missing_token = install_sh("--server", "http://127.0.0.1:9", "--binary", str(agent_binary), destdir=dest)
    assert missing_token.returncode == 1 and "--token TOKEN" in missing_token.stderr
    no_value = install_sh("--server", destdir=dest)
    assert no_value.returncode == 2 and "--server needs a value" in no_value.stderr
    unknown = install_sh("--sever", "x", destdir=dest)
    assert unknown.returncode == 2 and "unknown argument: --sever" in unknown.stderr
    no_binary = install_sh("--server", "http://x", "--token", "t", "--binary", str(tmp_path / "nope"), destdir=dest)
    assert no_binary.returncode == 1 and "is not an executable file" in no_binary.stderr
    assert not (dest / "usr").exists()


def test_install_sh_installs_upgrades_and_uninstalls(agent_binary: Path, live_collector: Collector, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    token = live_collector.token()
    first = install_sh("--server", live_collector.url, "--binary", str(agent_binary), "--watch", "/srv/vendor", "--watch", '/data/odd "name"', destdir=dest, token_env=token)
    assert first.returncode == 0, first.stderr
    assert token not in first.stdout + first.stderr

    modes = {
        "usr/local/bin/dlp-agent": 0o755, "etc/systemd/system/dlp-agent.service": 0o644, "etc/dlp-agent/agent.toml": 0o644,
        "var/lib/dlp-agent": 0o700, "var/log/dlp-agent": 0o750, "var/lib/dlp-agent/credentials.json": 0o600,
    }
    assert {path: stat.S_IMODE((dest / path).stat().st_mode) for path in modes} == modes
    unit = (dest / "etc/systemd/system/dlp-agent.service").read_text()
    assert unit == (LINUX / "dlp-agent.service.in").read_text().replace("@BINDIR@", "/usr/local/bin")
    assert "ExecStart=/usr/local/bin/dlp-agent run --config /etc/dlp-agent/agent.toml" in unit
    config = dest / "etc/dlp-agent/agent.toml"
    checked = run_binary(dest / "usr/local/bin/dlp-agent", "check-config", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["files"]["watch"] == ["/srv/vendor", '/data/odd "name"']
    agent_id = json.loads((dest / "var/lib/dlp-agent/credentials.json").read_text())["agent_id"]
    assert agent_id in live_collector.agent_ids()

    # Re-running is an upgrade: no token needed, and identity, spool and the admin's config stay.
    produce(dest / "var/lib/dlp-agent/spool.db", 2)
    config.write_text(config.read_text() + "# edited by the admin\n")
    identity = (dest / "var/lib/dlp-agent/credentials.json").read_bytes()
    again = install_sh("--binary", str(agent_binary), "--watch", "/elsewhere", destdir=dest)
    assert again.returncode == 0, again.stderr
    assert "already enrolled" in again.stderr and "--watch is not applied" in again.stderr
    assert (dest / "var/lib/dlp-agent/credentials.json").read_bytes() == identity
    assert spool_depth(dest / "var/lib/dlp-agent/spool.db") == 2
    assert config.read_text().endswith("# edited by the admin\n")

    removed = install_sh("--uninstall", destdir=dest)
    assert removed.returncode == 0, removed.stderr
    assert not (dest / "usr/local/bin/dlp-agent").exists() and not (dest / "etc/systemd/system/dlp-agent.service").exists()
    assert (dest / "var/lib/dlp-agent/credentials.json").exists() and config.exists()
    purged = install_sh("--uninstall", "--purge", destdir=dest)
    assert purged.returncode == 0, purged.stderr
    assert not (dest / "var/lib/dlp-agent").exists() and not (dest / "etc/dlp-agent").exists() and not (dest / "var/log/dlp-agent").exists()


def test_install_sh_enrolls_over_tls_with_the_given_ca(agent_binary: Path, tmp_path: Path) -> None:
    """--ca is copied beside the config and named there, so the service finds it at its real path."""
    cert, key = self_signed(tmp_path / "tls")
    data_dir = tmp_path / "collector"
    init = cli("server.cli", "init", "--data-dir", str(data_dir), "--json")
    assert init.returncode == 0, init.stderr
    serve = ServeProcess(data_dir, dict(os.environ), tls=(cert, key))
    try:
        serve.wait_ready()
        token = Collector(serve.url, data_dir, "").token(uses=2)
        # The binary's own CA bundle does not trust a self-signed collector: verification is on.
        untrusted = install_sh("--server", serve.url, "--binary", str(agent_binary), destdir=tmp_path / "untrusted", token_env=token)
        assert untrusted.returncode != 0 and "certificate" in untrusted.stderr.lower(), untrusted.stderr
        dest = tmp_path / "dest"
        trusted = install_sh("--server", serve.url, "--ca", str(cert), "--binary", str(agent_binary), destdir=dest, token_env=token)
        assert trusted.returncode == 0, trusted.stderr
    finally:
        serve.stop()
    assert (dest / "etc/dlp-agent/ca.pem").read_bytes() == cert.read_bytes()
    checked = run_binary(dest / "usr/local/bin/dlp-agent", "check-config", "--config", str(dest / "etc/dlp-agent/agent.toml"))
    assert json.loads(checked.stdout)["server"]["ca_file"] == "/etc/dlp-agent/ca.pem"
    assert json.loads((dest / "var/lib/dlp-agent/credentials.json").read_text())["server_url"] == serve.url


# The scripts themselves -----------------------------------------------------------------------


def test_shell_scripts_parse_and_pass_shellcheck(debs: dict[str, Path], tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-e", str(debs[__version__]), str(tmp_path / "DEBIAN")], check=True)
    sources = [LINUX / "install.sh", LINUX / "build-deb.sh", LINUX / "setup-functions.sh"]
    maintainer = [tmp_path / "DEBIAN" / name for name in ("postinst", "prerm", "postrm")]
    for script in sources + maintainer:
        for shell in ("sh", "bash"):
            result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
            assert result.returncode == 0, f"{shell} -n {script}: {result.stderr}"
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck): syntax checked only")
    lint = subprocess.run(["shellcheck", "-s", "sh", *map(str, sources)], capture_output=True, text=True, cwd=ROOT)
    assert lint.returncode == 0, lint.stdout
    # Each maintainer script carries all the shared functions and uses some: SC2317 (unreachable) is expected.
    lint = subprocess.run(["shellcheck", "-s", "sh", "-e", "SC2317", *map(str, maintainer)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
