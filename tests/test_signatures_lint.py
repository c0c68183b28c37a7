"""`dlp-signatures check` lints: missing meta, duplicate names, slow regexes, unspecific strings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from signatures.check import check

FLAWED = """rule no_meta
{
    strings:
        $a = "PROJECT-NIGHTJAR-INTERNAL"
    condition:
        $a
}

rule odd_severity
{
    meta:
        severity = "urgent"
        category = "document"
    strings:
        $short = "abc"
        $hex = { 4D ?? ?? 5A }
        $slow = /BEGIN.*END/
    condition:
        any of them
}
"""

CLEAN = """rule odd_severity
{
    meta:
        severity = "high"
        category = "document"
        corpus = "nightjar"
    strings:
        $a = "NIGHTJAR-LEDGER-RECONCILE" fullword
        $b = /token=[A-Z0-9]{32}/
    condition:
        any of them
}
"""


def _packs(tmp_path: Path) -> Path:
    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / "flawed.yar").write_text(FLAWED)
    (packs / "clean.yar").write_text(CLEAN)
    return packs


def test_each_flaw_is_reported_at_its_line(tmp_path):
    packs = _packs(tmp_path)
    messages = [str(p) for p in check(str(packs))]
    flawed = str(packs / "flawed.yar")
    expected = [
        f"{flawed}:1: rule no_meta has no severity meta",
        f"{flawed}:1: rule no_meta has no category meta",
        f"{flawed}:9: rule odd_severity: severity 'urgent' is not one of",
        f"{flawed}:15: string $short (3 characters) is too short",
        f"{flawed}:16: hex string $hex has 2 fixed byte(s)",
        f"{flawed}:17: regex $slow repeats any character without a bound",
        f"{flawed}:17: libyara:",
        f"{packs / 'clean.yar'}:1: rule odd_severity is also defined in {flawed}",
    ]
    for prefix in expected:
        assert any(m.startswith(prefix) for m in messages), f"{prefix!r} not in {messages}"
    assert not any("clean.yar" in m and "sample" in m for m in messages), "corpus-built rules need no samples"
    assert not any("clean.yar" in m and ("short" in m or "regex" in m) for m in messages)


def test_cli_exits_non_zero_on_lint_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "signatures.cli", "check", str(_packs(tmp_path))], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "too short" in result.stdout


def test_starter_packs_are_lint_clean():
    assert [str(p) for p in check()] == []
