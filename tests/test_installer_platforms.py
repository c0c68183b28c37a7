"""Windows and macOS installers, checked from Linux: the service host, install.sh under DESTDIR, the plist, install.ps1."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from agent import winservice
from agent.cli.main import build_parser
from agent.cli.status import collect
from agent.config import AgentConfig, ServerSection, load_config
from agent.daemon import stop_budget_s
from agent.spool import SpoolError
from tests.conftest import run_cli
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
MACOS = ROOT / "installer" / "macos"
INSTALL_SH = MACOS / "install.sh"
PLIST = MACOS / "com.dlp-endpoint.agent.plist"
INSTALL_PS1 = ROOT / "installer" / "windows" / "install.ps1"
AGENT_ENTRY = ROOT / ".venv" / "bin" / "dlp-agent"
SAMPLE = ROOT / "signatures" / "samples" / "confidentiality" / "proprietary_and_confidential" / "positive" / "memo.txt"

APP_DIR = "Library/Application Support/DLP Agent"
CONFIG = f"{APP_DIR}/agent.toml"


# agent/winservice.py: what runs without pywin32 --------------------------------------------


def test_service_paths_follow_programdata():
    assert winservice.default_config_path({"ProgramData": r"D:\PD"}) == r"D:\PD\DLP Agent\agent.toml"
    assert winservice.log_dir({"ProgramData": r"D:\PD"}) == r"D:\PD\DLP Agent\logs"
    assert winservice.default_config_path({}) == r"C:\ProgramData\DLP Agent\agent.toml"


def test_service_command_line_quotes_paths_and_parses_back():
    exe = r"C:\Program Files\DLP Agent\dlp-agent.exe"
    config = r"C:\ProgramData\DLP Agent\agent.toml"
    line = winservice.service_command_line(exe, config)
    assert line == r'"C:\Program Files\DLP Agent\dlp-agent.exe" service run --config "C:\ProgramData\DLP Agent\agent.toml"'
    args = build_parser().parse_args(winservice.service_arguments(config))
    assert (args.command, args.action, args.config) == ("service", "run", config)


def test_stop_wait_hint_covers_the_daemon_stop_budget():
    quick = AgentConfig(server=ServerSection(timeout_s=5))
    assert winservice.stop_wait_hint_ms(quick) == int(stop_budget_s(quick) * 1000)
    assert winservice.stop_wait_hint_ms(AgentConfig()) > winservice.stop_wait_hint_ms(quick)
    # The pipeline drain plus two couriers each finishing a request of up to two timeouts.
    assert stop_budget_s(AgentConfig()) >= 10 + 4 * 30


def test_service_command_is_refused_off_windows_with_a_clear_message():
    for args in (("service", "install"), ("service",)):
        proc = run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        stderr = proc.stderr.decode()
        assert "Windows service" in stderr and "systemd" in stderr and "docs/deploy.md" in stderr


def test_importing_the_cli_loads_no_windows_modules():
    code = (
        "import sys, agent.cli.main\n"
        "loaded = [m for m in sys.modules if m.startswith(('win32', 'servicemanager', 'pywintypes')) or m == 'agent.winservice']\n"
        "print(loaded)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _service_config(tmp_path: Path) -> Path:
    (tmp_path / "watch").mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[server]
timeout_s = 2
[files]
watch = ["{tmp_path / 'watch'}"]
quiet_ms = 100
[usb]
enabled = false
[clipboard]
enabled = false
[spool]
path = "spool.db"
[scan]
nice = 0
"""
    )
    return config


def _running(spool: str) -> bool:
    try:
        return bool(collect(spool)["running"])
    except SpoolError:  # not there yet, or created and its schema not written yet
        return False


def test_service_host_runs_the_daemon_on_its_thread_and_stops_on_request(tmp_path):
    config = _service_config(tmp_path)
    notes: list[tuple[str, str]] = []
    host = winservice.ServiceHost(str(config), notify=lambda level, message: notes.append((level, message)))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            host.run()
        except BaseException as exc:  # reported to the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="service-host")
    thread.start()
    try:
        spool = str(tmp_path / "spool.db")
        wait_for(lambda: _running(spool), timeout=30, message="the daemon to run")
        # No wait for the folder's watch: the daemon says it runs once its folders are watched.
        # Another process, as a user would: the daemon runs in this one, and the agent's own writes are not events.
        subprocess.run(["cp", str(SAMPLE), str(tmp_path / "watch" / "memo.txt")], check=True, timeout=30)
        wait_for(lambda: collect(spool)["spool_depth"] >= 1, timeout=30, message="the copied memo to be spooled")
    finally:
        host.request_stop()
        thread.join(timeout=stop_budget_s(load_config(str(config))))
    assert not thread.is_alive(), "the service host did not stop"
    assert errors == []
    assert not collect(str(tmp_path / "spool.db"))["running"]
    assert [level for level, _ in notes] == ["info"]
    assert host.stop_wait_hint_ms() == int(stop_budget_s(load_config(str(config))) * 1000)


def test_service_host_honours_a_stop_that_came_before_the_daemon(tmp_path):
    host = winservice.ServiceHost(str(_service_config(tmp_path)), notify=lambda *_: None)
    host.request_stop()
    thread = threading.Thread(target=host.run, name="service-host")
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()


def test_service_host_reports_a_bad_configuration_and_fails(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text("[spool]\nmax_bytes = 1\n")
    notes: list[tuple[str, str]] = []
    host = winservice.ServiceHost(str(config), notify=lambda level, message: notes.append((level, message)))
    with pytest.raises(winservice.ServiceError, match="spool.max_bytes"):
        host.run()
    assert len(notes) == 1 and notes[0][0] == "error" and "spool.max_bytes" in notes[0][1]


def test_service_log_goes_to_a_rotating_file(tmp_path):
    import logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        handler = winservice.configure_logging(str(tmp_path / "logs"))
        logging.getLogger("agent.test").info("service started")
        handler.flush()
        assert root.handlers == [handler]
        assert "service started" in (tmp_path / "logs" / winservice.LOG_FILE).read_text()
    finally:
        handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


# macOS: install.sh under DESTDIR, the plist ------------------------------------------------


def _install_sh(destdir: Path | None, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("DESTDIR", "DLP_TOKEN")}
    if destdir is not None:
        environment["DESTDIR"] = str(destdir)
    environment.update(env or {})
    return subprocess.run(["bash", str(INSTALL_SH), *args], capture_output=True, text=True, env=environment, timeout=60)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def staged(tmp_path: Path) -> Path:
    destdir = tmp_path / "root"
    proc = _install_sh(destdir, "--server", "https://collector.example:8443", "--token", "dlpe_secret_token",
                       "--watch", "/Users/alice/Projects", "--watch", '/Volumes/Team "Q"', "--binary", str(AGENT_ENTRY))
    assert proc.returncode == 0, proc.stderr
    assert "not enrolling" in proc.stdout
    return destdir


def test_macos_install_lays_down_binary_plist_and_private_config(staged):
    binary = staged / "usr/local/bin/dlp-agent"
    assert binary.read_bytes() == AGENT_ENTRY.read_bytes() and _mode(binary) == 0o755
    assert (staged / "Library/LaunchDaemons/com.dlp-endpoint.agent.plist").read_bytes() == PLIST.read_bytes()
    assert _mode(staged / "Library/LaunchDaemons/com.dlp-endpoint.agent.plist") == 0o644
    assert _mode(staged / APP_DIR) == 0o700 and _mode(staged / APP_DIR / "state") == 0o700
    assert _mode(staged / CONFIG) == 0o600
    assert (staged / "Library/Logs/DLP Agent").is_dir()
    if os.geteuid() == 0:
        assert (staged / APP_DIR).stat().st_uid == 0 and binary.stat().st_uid == 0
    assert not any("dlpe_secret_token" in p.read_text(errors="replace") for p in staged.rglob("*") if p.is_file() and p != binary)


def test_macos_config_is_valid_for_the_agent_with_absolute_paths(staged):
    config = load_config(str(staged / CONFIG))
    state = f"/{APP_DIR}/state"
    assert config.server.url == "https://collector.example:8443"
    assert config.server.credentials == f"{state}/credentials.json"
    assert config.spool.path == f"{state}/spool.db"
    assert config.rules.bundle_dir == f"{state}/bundle"
    assert config.files.watch == ["/Users/alice/Projects", '/Volumes/Team "Q"']
    assert config.usb.removable_roots == ["/Volumes"]
    assert config.clipboard.enabled is False
    assert config.server.ca_file == ""
    assert "**/Library/**" in config.files.exclude
    proc = run_cli("check-config", "--config", str(staged / CONFIG))
    assert proc.returncode == 0, proc.stderr


def test_macos_default_watch_and_ca(tmp_path):
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    destdir = tmp_path / "root"
    proc = _install_sh(destdir, "--server", "https://c.example", "--ca", str(ca), "--binary", str(AGENT_ENTRY))
    assert proc.returncode == 0, proc.stderr
    config = load_config(str(destdir / CONFIG))
    assert config.files.watch == ["/Users"]
    assert config.server.ca_file == f"/{APP_DIR}/ca.pem"
    assert (destdir / APP_DIR / "ca.pem").read_bytes() == ca.read_bytes()
    assert _mode(destdir / APP_DIR / "ca.pem") == 0o600


def test_macos_rerun_is_an_upgrade_that_keeps_config_and_state(staged, tmp_path):
    config = staged / CONFIG
    edited = config.read_text() + "\n[scan]\nthreads = 3\n"
    config.write_text(edited)
    state = staged / APP_DIR / "state"
    (state / "credentials.json").write_text('{"agent_id": "a1"}')
    (state / "spool.db").write_bytes(b"spool")
    newer = tmp_path / "dlp-agent-newer"
    newer.write_text("#!/bin/sh\necho newer\n")
    proc = _install_sh(staged, "--server", "https://other.example", "--watch", "/elsewhere", "--binary", str(newer))
    assert proc.returncode == 0, proc.stderr
    assert "kept the existing" in proc.stdout
    assert config.read_text() == edited
    assert (state / "credentials.json").read_text() == '{"agent_id": "a1"}'
    assert (state / "spool.db").read_bytes() == b"spool"
    assert (staged / "usr/local/bin/dlp-agent").read_bytes() == newer.read_bytes()


def test_macos_uninstall_keeps_state_and_purge_removes_it(staged):
    proc = _install_sh(staged, "--uninstall")
    assert proc.returncode == 0, proc.stderr
    assert not (staged / "usr/local/bin/dlp-agent").exists()
    assert not (staged / "Library/LaunchDaemons/com.dlp-endpoint.agent.plist").exists()
    assert (staged / CONFIG).exists()
    proc = _install_sh(staged, "--uninstall", "--purge")
    assert proc.returncode == 0, proc.stderr
    assert not (staged / APP_DIR).exists() and not (staged / "Library/Logs/DLP Agent").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--token", "t"], "needs --server"),
        (["--server", "collector.example", "--token", "t"], "must start with https://"),
        (["--server", "https://c.example", "--binary", "/nonexistent/dlp-agent"], "no agent binary"),
        (["--server", "https://c.example", "--ca", "/nonexistent/ca.pem"], "does not exist"),
        (["--server"], "needs a value"),
        (["--purge"], "--purge goes with --uninstall"),
        (["--bogus"], "unknown argument"),
    ],
)
def test_macos_install_refuses_bad_arguments(tmp_path, args, message):
    extra = [] if "--binary" in args else ["--binary", str(AGENT_ENTRY)]
    proc = _install_sh(tmp_path / "root", *args, *extra)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "root").exists()


def test_macos_install_needs_a_token_to_enroll_for_real(tmp_path):
    # Without DESTDIR the script checks its arguments before it checks for macOS and root.
    args = ("--server", "https://c.example", "--binary", str(AGENT_ENTRY))
    proc = _install_sh(None, *args)
    assert proc.returncode == 2 and "--token" in proc.stderr
    proc = _install_sh(None, *args, env={"DLP_TOKEN": "t"})
    assert proc.returncode == 2 and "for macOS" in proc.stderr


def _shell_variables(script: Path) -> dict[str, str]:
    """The script's upper-case assignments, with earlier ones expanded (LABEL=..., PLIST=".../$LABEL.plist")."""
    resolved: dict[str, str] = {}
    for name, _, value in re.findall(r'^([A-Z_]+)=("?)([^"\n]*)\2$', script.read_text(), re.M):
        resolved[name] = re.sub(r"\$(\w+)", lambda m: resolved[m.group(1)], value)
    return resolved


def test_plist_matches_install_sh_and_the_daemon():
    plist = plistlib.loads(PLIST.read_bytes())
    names = _shell_variables(INSTALL_SH)
    assert plist["Label"] == names["LABEL"] == "com.dlp-endpoint.agent"
    assert names["PLIST"] == f"/Library/LaunchDaemons/{plist['Label']}.plist"
    assert plist["ProgramArguments"] == [names["BIN"], "run", "--config", names["CONFIG"]]
    assert plist["WorkingDirectory"] == names["APP_DIR"]
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == f"{names['LOG_DIR']}/agent.log"
    assert plist["ProcessType"] in ("Background", "Standard", "Adaptive")
    assert 5 <= plist["ThrottleInterval"] <= 60
    assert plist["ExitTimeOut"] >= stop_budget_s(AgentConfig())
    assert plist["Umask"] == 0o077


def test_shell_scripts_parse_and_pass_shellcheck():
    assert subprocess.run(["bash", "-n", str(INSTALL_SH)], capture_output=True).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", "--shell=bash", str(INSTALL_SH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# Windows: install.ps1, read (PowerShell is not available on Debian) ------------------------


@pytest.fixture(scope="module")
def ps1() -> str:
    return INSTALL_PS1.read_text()


def test_ps1_declares_the_documented_parameters(ps1):
    params = re.search(r"param\((.*?)\n\)", ps1, re.S)
    assert params, "no param() block"
    declared = re.findall(r"\]\$(\w+)", params.group(1))
    assert declared == ["Server", "Token", "Ca", "Watch", "Binary", "Uninstall", "Purge", "Unexpected"]
    assert "[string[]]$Watch" in params.group(1) and "[switch]$Uninstall" in params.group(1)
    assert "PositionalBinding = $false" in ps1 and "Read-Host" not in ps1 and "Mandatory" not in ps1


def test_ps1_requires_elevation_and_documents_its_exit_codes(ps1):
    codes = dict(re.findall(r"^\$(Exit\w+) = (\d)$", ps1, re.M))
    assert codes == {"ExitError": "1", "ExitUsage": "2", "ExitNotElevated": "3", "ExitEnroll": "4", "ExitService": "5"}
    assert "WindowsBuiltInRole]::Administrator" in ps1
    assert re.search(r"if \(-not \(Test-Elevated\)\) \{[^}]*exit \$ExitNotElevated", ps1, re.S)
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for code, meaning in (("3", "not elevated"), ("4", "enrollment failed"), ("5", "service")):
        assert re.search(rf"\| `{code}` \|[^\n]*{meaning}", docs), f"exit code {code} not documented in docs/deploy.md"


def test_ps1_sets_aside_files_others_placed_before_the_lockdown(ps1):
    install = ps1[ps1.index("function Install-Agent"):]
    # Before anything decides "first install" or "enrolled" from those files, and before the lockdown.
    assert install.index("Set-AsideUntrusted") < install.index("$firstInstall = ") < install.index("Set-DataDirAcl")
    aside = ps1[ps1.index("function Set-AsideUntrusted"):ps1.index("function Set-DataDirAcl")]
    assert "@($Config, $CaPath, $Credentials)" in aside and "AreAccessRulesProtected" in aside
    assert "$TrustedOwners = @('S-1-5-18', 'S-1-5-32-544')" in ps1


def test_ps1_registers_the_service_through_the_agent_with_recovery(ps1):
    assert f"$ServiceName = '{winservice.SERVICE_NAME}'" in ps1
    assert "@('service', 'install', '--config', $Config)" in ps1
    assert "'failure', $ServiceName, 'reset=', '86400', 'actions=', 'restart/5000/restart/5000/restart/60000'" in ps1
    assert "'failureflag', $ServiceName, '1'" in ps1
    assert "/inheritance:r" in ps1 and "*S-1-5-18" in ps1 and "*S-1-5-32-544" in ps1
    # agent.toml without a BOM, written only when absent (an upgrade keeps it).
    assert "UTF8Encoding $false" in ps1
    assert "if ($firstInstall) { Write-AgentConfig }" in ps1


def test_ps1_keeps_the_token_out_of_logs_and_command_lines(ps1):
    assert "Start-Transcript" not in ps1
    uses = [line.strip() for line in ps1.splitlines() if "$Token" in line and not line.strip().startswith("#")]
    assert uses == [
        "[string]$Token,",
        "if (-not $Token) { $Token = $env:DLP_TOKEN }",
        "if (-not $enrolled -and (-not $Token -or -not $Server)) {",
        "$env:DLP_TOKEN = $Token",
    ]
    assert "Remove-Item Env:DLP_TOKEN" in ps1


def test_ps1_writes_a_config_the_agent_accepts(ps1, tmp_path):
    """The here-string in install.ps1, filled in as PowerShell would, must load with the agent's loader."""
    template = re.search(r'\$text = @"\n(.*?)\n"@', ps1, re.S).group(1)
    state = "C:/ProgramData/DLP Agent/state"
    values = {
        "$(ConvertTo-TomlString $Server)": '"https://collector.example:8443"',
        "$caLine": 'ca_file = "C:/ProgramData/DLP Agent/ca.pem"',
        "$(ConvertTo-TomlString $Credentials)": f'"{state}/credentials.json"',
        "$watchList": '"C:/Users", "D:/Projects"',
        "$(ConvertTo-TomlString (Join-Path $StateDir 'bundle'))": f'"{state}/bundle"',
        "$(ConvertTo-TomlString (Join-Path $StateDir 'spool.db'))": f'"{state}/spool.db"',
        '"$Exe"': '"C:\\Program Files\\DLP Agent\\dlp-agent.exe"',
        '"$Config"': '"C:\\ProgramData\\DLP Agent\\agent.toml"',
    }
    text = template
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    assert "$" not in text.replace("`$", ""), text
    data = tomllib.loads(text)
    assert data["clipboard"]["enabled"] is False and data["usb"]["removable_roots"] == []
    path = tmp_path / "agent.toml"
    path.write_text(text)
    assert data["files"]["watch"] == ["C:/Users", "D:/Projects"]
    assert data["spool"]["path"] == f"{state}/spool.db"
    config = load_config(str(path))  # keys and values valid for the agent (paths are Windows ones, resolved on Windows)
    assert "**/AppData/**" in config.files.exclude
