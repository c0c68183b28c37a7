"""Agent configuration: layering, validation messages, paths relative to the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, effective, load_config
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
