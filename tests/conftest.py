"""Shared fixtures: a small rule pack written per test, scanners built from it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.scanning import ScanLimits, Scanner, load_rules

SECRET_WORD = "ZEBRAFISH-PAYLOAD-7741"

TEST_PACK = f"""
rule secret_word : test
{{
    meta:
        severity = "high"
        category = "source_code"
        description = "the word the tests plant"
    strings:
        $w = "{SECRET_WORD}"
    condition:
        $w
}}
"""

MARKINGS_PACK = """
rule marking
{
    meta:
        severity = "critical"
        category = "document"
    strings:
        $m = "PROPRIETARY AND CONFIDENTIAL" nocase
    condition:
        $m
}
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "testpack.yar").write_text(TEST_PACK)
    (d / "markings.yar").write_text(MARKINGS_PACK)
    return d


@pytest.fixture
def make_scanner(rules_dir: Path):
    ruleset = load_rules(rules_dir)

    def build(**kwargs) -> Scanner:
        limits = kwargs.pop("limits", None) or ScanLimits()
        return Scanner(ruleset, limits=limits, **kwargs)

    return build


@pytest.fixture
def scanner(make_scanner) -> Scanner:
    return make_scanner()


def run_cli(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run ``dlp-agent`` as a user would, in a child process."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", *args],
        capture_output=True,
        env=env,
        timeout=kwargs.pop("timeout", 120),
        **kwargs,
    )
    if check and proc.returncode not in (0, 1):
        raise AssertionError(proc.stderr.decode(errors="replace"))
    return proc


from tests.collector_env import (  # noqa: E402,F401  (fixtures for the collector suites)
    admin,
    backend,
    client,
    clock,
    collector,
    collectors,
    database_url,
    enroll,
    pg_url,
    pytest_configure,
    pytest_generate_tests,
    reviewer,
    settings_toml,
    sqlite_template,
)
from tests.faultproxy import fault_proxy_factory  # noqa: E402,F401  (fixtures for the shipping suites)
from tests.hygiene import no_leaks  # noqa: E402,F401  (autouse: every test)
from tests.stack import stack  # noqa: E402,F401
from tests.xvfb import xvfb_display  # noqa: E402,F401  (fixture for the clipboard suites)
