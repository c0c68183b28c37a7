"""Agent configuration: layering, validation messages, paths relative to the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, ServerSection, effective, load_config
from tests.conftest import run_cli

CONTRACT_EXAMPLE = """
[server]
url = "https://collector.example:8443"
[files]
watch = ["~/Desktop", "~/Documents"]
exclude = ["**/.cache/**"]
[usb]
enabled = true
removable_roots = ["/media", "/run/media"]
[clipboard]
enabled = true
interval_ms = 500
[rules]
dir = "rules"
[spool]
path = "spool.db"
max_bytes = 104857600
"""


def test_contract_example_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(CONTRACT_EXAMPLE)
    config = load_config(str(path), environ={})
    assert config.server.url == "https://collector.example:8443"
    assert config.rules.dir == str(tmp_path / "rules") and config.rules_explicit
    assert config.spool.path == str(tmp_path / "spool.db")
    assert config.files.watch == [str(Path("~/Desktop").expanduser()), str(Path("~/Documents").expanduser())]
    assert config.clipboard.interval_ms == 500


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(CONTRACT_EXAMPLE)
    env = {"DLP_AGENT_SPOOL_MAX_BYTES": "2097152", "DLP_AGENT_FILES_WATCH": '["/srv/a", "/srv/b"]', "DLP_AGENT_USB_ENABLED": "false"}
    config = load_config(str(path), environ=env)
    assert (config.spool.max_bytes, config.files.watch, config.usb.enabled) == (2097152, ["/srv/a", "/srv/b"], False)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[spool]\nmax_bytes = 'lots'\n", "spool.max_bytes"),
        ("[spool]\nmax_bytes = 10\n", "spool.max_bytes"),
        ("[clipboard]\nintervall_ms = 5\n", "clipboard.intervall_ms"),
        ("[nosuch]\nx = 1\n", "nosuch"),
        ("[files\nwatch = 1\n", "agent.toml"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert message in str(caught.value)


def test_unknown_environment_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="DLP_AGENT_SPOOL_MAXBYTES"):
        load_config(None, environ={"DLP_AGENT_SPOOL_MAXBYTES": "1"})


def test_check_config_command(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(CONTRACT_EXAMPLE)
    ok = run_cli("check-config", "--config", str(path))
    assert ok.returncode == 0 and '"max_bytes": 104857600' in ok.stdout.decode()
    path.write_text("[spool]\nmax_bytes = -1\n")
    bad = run_cli("check-config", "--config", str(path))
    assert bad.returncode == 2 and "spool.max_bytes" in bad.stderr.decode()


def test_effective_hides_internal_fields() -> None:
    assert set(effective(load_config(None, environ={}))) == {"agent", "server", "files", "usb", "clipboard", "protected", "rules", "egress", "spool", "scan"}


def test_every_problem_is_listed_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[files]\nwatch = ["/a", 2]\nbackend = "dnotify"\n[usb]\nenabled = "maybe"\n[scan]\nthreads = 2.5\ntimeout_s = 0\n[nosuch]\n[clipboard]\nintervall_ms = 5\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert sorted(line.split(": ")[1] for line in lines) == sorted(["files.watch.1", "files.backend", "usb.enabled", "scan.threads", "scan.timeout_s", "nosuch", "clipboard.intervall_ms"])
    assert f"{path}: files.backend: Input should be 'auto', 'fanotify' or 'inotify'" in lines
    assert f"{path}: scan.timeout_s: Input should be greater than 0" in lines


def test_values_are_taken_as_their_type_as_before(tmp_path: Path) -> None:
    """Strings of numbers and flags, and whole floats, load as they did when pydantic read the file."""
    path = tmp_path / "agent.toml"
    path.write_text('[spool]\nmax_bytes = "2097152"\n[usb]\nenabled = "no"\n[scan]\nthreads = 4.0\ntimeout_s = 5\n')
    config = load_config(str(path), environ={"DLP_AGENT_CLIPBOARD_PRIMARY": "off", "DLP_AGENT_SERVER_TIMEOUT_S": "2.5"})
    assert (config.spool.max_bytes, config.usb.enabled, config.scan.threads, config.clipboard.primary) == (2097152, False, 4, False)
    assert isinstance(config.scan.timeout_s, float) and config.scan.timeout_s == 5.0 and config.server.timeout_s == 2.5
    assert isinstance(config.scan.threads, int)


def test_a_section_that_is_no_table_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("usb = 5\n")
    with pytest.raises(ConfigError, match="usb: Input should be a valid dictionary"):
        load_config(str(path), environ={})


def test_sections_made_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="timeout_s: Input should be less than or equal to 600"):
        ServerSection(timeout_s=601)
    assert AgentConfig(server=ServerSection(timeout_s="5")).server.timeout_s == 5.0


@pytest.mark.parametrize("text", ["1e3", "1.", "1.5", "\u0661\u0662", "\uff11\uff12", "0x10"])
def test_numbers_are_ascii_digits_only(text: str) -> None:
    """Python's int() and float() take these; a config number never means them (pydantic refused them too)."""
    with pytest.raises(ConfigError, match="scan.threads: Input should be a valid integer"):
        load_config(None, environ={"DLP_AGENT_SCAN_THREADS": text})
    if text not in ("1e3", "1.", "1.5"):
        with pytest.raises(ConfigError, match="scan.timeout_s: Input should be a valid number"):
            load_config(None, environ={"DLP_AGENT_SCAN_TIMEOUT_S": text})
