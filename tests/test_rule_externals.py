"""Public rule sets as they are: LOKI/THOR external variables, broken files reported and skipped,
compiled rulesets cached by content hash (and never trusted when tampered with)."""

from __future__ import annotations

import io
import json
import os
import pwd
import zipfile
from pathlib import Path

import pytest

from agent.scanning import RuleError, Scanner, load_rules
from agent.scanning.cache import ResultCache
from agent.scanning.externals import FILETYPES, filetype
from agent.scanning.rulecache import KEY_FILE, SUFFIX
from server.signing import check_compiles
from tests.agent_process import Agent, write_config
from tests.conftest import run_cli
from tests.waiting import wait_for

OWNER = pwd.getpwuid(os.geteuid()).pw_name
MD5_HINT = '(LOKI\'s md5 variable is not defined by the agent: use hash.md5(0, filesize) with import "hash")'

EXTERNALS_PACK = f"""
rule by_name {{ condition: filename == "budget.txt" }}
rule by_extension {{ condition: extension == ".ps1" }}
rule by_type {{ condition: filetype == "EXE" }}
rule by_member_path {{ condition: filepath matches /\\.zip!docs\\/plan\\.md$/ }}
rule by_owner {{ condition: owner == "{OWNER}" and filename == "owned.bin" }}
rule member_owner {{ condition: owner == "{OWNER}" and filename == "owned-inside.txt" }}
rule by_full_path {{ strings: $a = "needle" condition: $a and filepath contains "/deep/" }}
rule no_name {{ strings: $a = "unnamed-bytes" condition: $a and filename == "" and filepath == "" }}
"""


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def externals_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "ext-rules"
    rules.mkdir()
    (rules / "loki.yar").write_text(EXTERNALS_PACK)
    return rules


def _files(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "deep").mkdir(exist_ok=True)
    inner = _zip({"docs/plan.md": b"plan", "tool.exe": b"MZ\x90\x00", "owned-inside.txt": b"x"})
    files = {
        "budget.txt": b"numbers",
        "other.txt": b"numbers",  # the same bytes as budget.txt: only the name differs
        "Run.PS1": b"Write-Host hi",
        "run.ps2": b"Write-Host hi",
        "prog.bin": b"MZ\x90\x00\x03",
        "owned.bin": b"o",
        "deep/hay.txt": b"a needle here",
        "hay.txt": b"a needle here",
        "outer.zip": _zip({"inner.zip": inner, "docs/plan.md": b"plan"}),
        "plain.zip": _zip({"docs/plan.txt": b"plan"}),
    }
    paths = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        paths[name] = root / name
    return paths


def _matches(result) -> set[tuple[str, str | None]]:
    return {(m.rule, m.member) for m in result.matches}


def test_each_variable_matches_the_right_files_and_members(tmp_path: Path, externals_rules: Path) -> None:
    files = _files(tmp_path / "files")
    scanner = Scanner(load_rules(externals_rules), cache=ResultCache())
    found = {name: _matches(scanner.scan_path(str(path))) for name, path in files.items()}
    assert found["budget.txt"] == {("by_name", None)}
    assert found["other.txt"] == set()  # same bytes, other name: the result cache must not answer for it
    assert found["Run.PS1"] == {("by_extension", None)}  # extension lower-cased, with its dot
    assert found["run.ps2"] == set()
    assert found["prog.bin"] == {("by_type", None)}
    assert found["owned.bin"] == {("by_owner", None)}
    assert found["deep/hay.txt"] == {("by_full_path", None)}  # full path of the file
    assert found["hay.txt"] == set()
    assert found["outer.zip"] == {
        ("by_member_path", "docs/plan.md"),
        ("by_member_path", "inner.zip!docs/plan.md"),  # nested: outer.zip!inner.zip!docs/plan.md
        ("by_type", "inner.zip!tool.exe"),  # a member's type is sniffed from its own bytes
        ("member_owner", "inner.zip!owned-inside.txt"),  # members have their archive's owner
    }
    assert found["plain.zip"] == set()
    # Content without a file keeps the defaults but the type.
    assert _matches(scanner.scan_bytes(b"unnamed-bytes", name="clipboard")) == {("no_name", None)}
    unnamed = tmp_path / "files" / "unnamed.txt"
    unnamed.write_bytes(b"unnamed-bytes")
    assert _matches(scanner.scan_path(str(unnamed))) == set()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_scan_command_sets_the_variables(tmp_path: Path, externals_rules: Path, monkeypatch, jobs: str) -> None:
    monkeypatch.setenv("DLP_AGENT_RULES_CACHE", str(tmp_path / "cache"))
    files = _files(tmp_path / "files")
    proc = run_cli("scan", "--rules", str(externals_rules), "--json", "--jobs", jobs, str(tmp_path / "files"), text=True)
    assert proc.returncode == 1, proc.stderr
    results = {Path(r["path"]).relative_to(tmp_path / "files").as_posix(): r for r in map(json.loads, proc.stdout.splitlines())}
    matched = {name: {(m["rule"], m.get("member")) for m in r.get("matches", [])} for name, r in results.items()}
    assert set(results) == set(files)
    assert matched["budget.txt"] == {("by_name", None)} and matched["other.txt"] == set()
    assert matched["Run.PS1"] == {("by_extension", None)}
    assert ("by_member_path", "inner.zip!docs/plan.md") in matched["outer.zip"]
    assert ("member_owner", "inner.zip!owned-inside.txt") in matched["outer.zip"]


def test_daemon_pipeline_sets_the_variables(tmp_path: Path, externals_rules: Path) -> None:
    config = write_config(tmp_path, externals_rules)
    agent = Agent(config)
    try:
        desktop = tmp_path / "Desktop"
        (desktop / "budget.txt").write_bytes(b"numbers")
        (desktop / "outer.zip").write_bytes(_zip({"inner.zip": _zip({"docs/plan.md": b"plan"})}))
        (desktop / "other.txt").write_bytes(b"numbers")

        def matched() -> dict[str, set[tuple[str, str | None]]]:
            found: dict[str, set[tuple[str, str | None]]] = {}
            for event in agent.events():
                name = Path(event["path"]).name
                found.setdefault(name, set()).update((m["rule"], m.get("member")) for m in event.get("matches", []))
            return found

        wait_for(lambda: {"budget.txt", "outer.zip"} <= set(matched()), timeout=30, message="events for the matching files")
        found = matched()
        assert found["budget.txt"] == {("by_name", None)}
        assert found["outer.zip"] == {("by_member_path", "inner.zip!docs/plan.md")}
        assert "other.txt" not in found  # clean files are not events
    finally:
        agent.stop()
    # The daemon kept its compiled rules in its own cache, 0700.
    cache = tmp_path / "bundle" / "compiled"
    assert cache.is_dir() and (cache.stat().st_mode & 0o777) == 0o700
    assert len(list(cache.glob(f"*{SUFFIX}"))) == 1


def test_filetype_uses_lokis_names() -> None:
    assert filetype(b"MZ\x90\x00") == "EXE"
    assert filetype(b"PK\x03\x04\x14\x00\x06\x00rest") == "Office"  # the longer signature listed first wins
    assert filetype(b"PK\x03\x04\x0a\x00") == "ZIP"
    assert filetype(b"#!/bin/sh\n") == "UNIX SCRIPT"
    assert filetype(b"#!python") == "Script"
    assert filetype(b"\x7fELF\x02") == "ELF"
    assert filetype(b"%PDF-1.7") == "PDF"
    assert filetype(b"<?xml version") == "XML"
    assert filetype(b"plain text") == "UNKNOWN"
    assert filetype(b"") == "UNKNOWN"
    assert filetype(memoryview(b"\x1f\x8b\x08\x00")) == "GZIP"
    assert {"EXE", "ZIP", "Office", "UNKNOWN"} <= set(FILETYPES)


def test_publishing_defines_the_variables_and_stays_strict() -> None:
    assert check_compiles({"loki": 'rule r { condition: filename == "a.exe" }'}) == 1
    with pytest.raises(RuleError, match=r"broken\.yar:1: .*nosuch"):
        check_compiles({"loki": 'rule r { condition: filename == "a.exe" }', "broken": "rule b { condition: nosuch }"})


# Broken files ------------------------------------------------------------------


def _broken_set(root: Path) -> Path:
    root.mkdir()
    (root / "good.yar").write_text('rule good { strings: $a = "needle" condition: $a and extension == ".txt" }\n')
    (root / "pe_rules.yar").write_text('import "pe"\nrule pe_one { condition: pe.number_of_sections > 1 and filename != "x" }\n')
    (root / "bad_identifier.yar").write_text("rule ok { condition: true }\n\nrule bad {\n  condition: nosuchthing\n}\n")
    (root / "bad_field.yar").write_text('import "pe"\nrule f {\n  condition:\n    pe.no_such_field == 1\n}\n')
    (root / "bad_md5.yar").write_text('rule m { condition: md5 == "x" }\n')
    (root / "words.yar").write_text('rule w { strings: $a = "owner filetype" condition: $a }\n')
    return root


def test_check_reports_every_broken_file_and_what_the_set_uses(tmp_path: Path) -> None:
    rules = _broken_set(tmp_path / "set")
    proc = run_cli_signatures("check", "--compile-only", str(rules))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines == [
        f"{rules / 'bad_field.yar'}:4: invalid field name \"no_such_field\"",
        f"{rules / 'bad_identifier.yar'}:4: undefined identifier \"nosuchthing\"",
        f"{rules / 'bad_md5.yar'}:1: undefined identifier \"md5\" {MD5_HINT}",
    ]
    assert "3 of 6 rule file(s) compile" in proc.stderr
    assert "modules used: pe (2 files)" in proc.stderr
    # words.yar only names them in a string: it does not use them.
    assert "external variables used: filename (1 file), extension (1 file)" in proc.stderr


def run_cli_signatures(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "signatures.cli", *args], capture_output=True, text=True)


def test_scan_is_strict_by_default_and_skip_broken_names_what_it_left_out(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DLP_AGENT_RULES_CACHE", str(tmp_path / "cache"))
    rules = _broken_set(tmp_path / "set")
    target = tmp_path / "hay.txt"
    target.write_text("a needle")
    strict = run_cli("scan", "--rules", str(rules), str(target), text=True)
    assert strict.returncode == 2 and "rules error" in strict.stderr and strict.stdout == ""

    for attempt in ("cold", "warm"):  # the second run loads the cache: it still names what was left out
        lenient = run_cli("scan", "--skip-broken", "--rules", str(rules), str(target), text=True)
        assert lenient.returncode == 1, (attempt, lenient.stderr)
        assert "good.good" in lenient.stdout
        left_out = [line for line in lenient.stderr.splitlines() if "left out: " in line]
        assert left_out == [
            f"dlp-agent: rules: left out: {rules / 'bad_field.yar'}:4: invalid field name \"no_such_field\"",
            f"dlp-agent: rules: left out: {rules / 'bad_identifier.yar'}:4: undefined identifier \"nosuchthing\"",
            f"dlp-agent: rules: left out: {rules / 'bad_md5.yar'}:1: undefined identifier \"md5\" {MD5_HINT}",
        ], attempt
        assert "3 rule file(s) left out, 3 loaded" in lenient.stderr

    clean = tmp_path / "clean.txt"
    clean.write_text("nothing")
    assert run_cli("scan", "--skip-broken", "--rules", str(rules), str(clean)).returncode == 0
    only_broken = tmp_path / "only-broken"
    only_broken.mkdir()
    (only_broken / "bad.yar").write_text("rule b { condition: nosuch }\n")
    nothing = run_cli("scan", "--skip-broken", "--rules", str(only_broken), str(clean), text=True)
    assert nothing.returncode == 2 and "no rule file compiles" in nothing.stderr


# Compiled-rules cache ----------------------------------------------------------------


def _cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"*{SUFFIX}"))


def _rule_names(ruleset) -> list[str]:
    return sorted(f"{r.identifier}" for r in ruleset.rules)


def test_libyara_warnings_outlive_compaction_and_the_cache(tmp_path: Path) -> None:
    """`dlp-signatures check` reports libyara's warnings; compacted and cached rules no longer carry them."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "slow.yar").write_text('rule slow { meta: severity = "low" strings: $a = /BEGIN.*END/ condition: $a }\n')
    cold = load_rules(rules, cache_dir=str(tmp_path / "cache"))
    warm = load_rules(rules, cache_dir=str(tmp_path / "cache"))
    assert warm.cached and cold.warnings and warm.warnings == cold.warnings
    assert "slow" in " ".join(cold.warnings).lower()


def test_warm_load_equals_cold(tmp_path: Path, externals_rules: Path) -> None:
    cache = tmp_path / "cache"
    files = _files(tmp_path / "files")
    cold = load_rules(externals_rules, cache_dir=str(cache))
    warm = load_rules(externals_rules, cache_dir=str(cache))
    assert not cold.cached and warm.cached
    assert (cold.version, cold.rule_count, cold.namespaces) == (warm.version, warm.rule_count, warm.namespaces)
    assert _rule_names(cold) == _rule_names(warm)
    for path in files.values():
        assert _matches(Scanner(cold).scan_path(str(path))) == _matches(Scanner(warm).scan_path(str(path)))
    assert (cache.stat().st_mode & 0o777) == 0o700
    assert ((cache / KEY_FILE).stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize("damage", ["flip a compiled byte", "truncate", "foreign key", "garbage", "other rules' file"])
def test_a_tampered_or_corrupt_cache_file_is_rebuilt(tmp_path: Path, externals_rules: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    load_rules(externals_rules, cache_dir=str(cache))
    (cached,) = _cache_files(cache)
    blob = bytearray(cached.read_bytes())
    if damage == "flip a compiled byte":
        blob[-100] ^= 0x40
    elif damage == "truncate":
        del blob[len(blob) // 2 :]
    elif damage == "foreign key":
        # A valid cache file, of the same rules, written by another machine or user (another key).
        other = tmp_path / "other-cache"
        load_rules(externals_rules, cache_dir=str(other))
        blob = bytearray(_cache_files(other)[0].read_bytes())
    elif damage == "garbage":
        blob = bytearray(b"YARA" + os.urandom(4000))
    else:
        # A valid file of this cache, for other rules, put in place of this one.
        changed = tmp_path / "changed"
        changed.mkdir()
        (changed / "loki.yar").write_text("rule only_one { condition: true }\n")
        load_rules(changed, cache_dir=str(cache))
        blob = bytearray(next(p for p in _cache_files(cache) if p != cached).read_bytes())
    cached.write_bytes(bytes(blob))
    again = load_rules(externals_rules, cache_dir=str(cache))
    assert not again.cached  # not trusted: compiled afresh
    assert _rule_names(again) == _rule_names(load_rules(externals_rules))
    assert cached.read_bytes() != bytes(blob)  # and written again
    assert load_rules(externals_rules, cache_dir=str(cache)).cached


def test_a_changed_rule_invalidates_the_cache(tmp_path: Path, externals_rules: Path) -> None:
    cache = tmp_path / "cache"
    target = tmp_path / "budget.txt"
    target.write_bytes(b"numbers")
    first = load_rules(externals_rules, cache_dir=str(cache))
    assert _matches(Scanner(first).scan_path(str(target))) == {("by_name", None)}
    (externals_rules / "loki.yar").write_text(EXTERNALS_PACK.replace('"budget.txt"', '"other.txt"'))
    second = load_rules(externals_rules, cache_dir=str(cache))
    assert not second.cached and second.version != first.version
    assert _matches(Scanner(second).scan_path(str(target))) == set()
    assert load_rules(externals_rules, cache_dir=str(cache)).cached
    assert len(_cache_files(cache)) == 2


def test_a_cache_directory_others_can_write_is_not_used(tmp_path: Path, externals_rules: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    cache.chmod(0o777)
    for _ in range(2):
        assert not load_rules(externals_rules, cache_dir=str(cache)).cached
    assert _cache_files(cache) == [] and not (cache / KEY_FILE).exists()
    # A key others could read is replaced (so the files signed with it no longer verify).
    cache.chmod(0o700)
    assert not load_rules(externals_rules, cache_dir=str(cache)).cached
    (cache / KEY_FILE).chmod(0o644)
    assert not load_rules(externals_rules, cache_dir=str(cache)).cached
    assert ((cache / KEY_FILE).stat().st_mode & 0o777) == 0o600
    assert load_rules(externals_rules, cache_dir=str(cache)).cached


def test_skip_broken_is_part_of_the_cache_key(tmp_path: Path) -> None:
    rules = _broken_set(tmp_path / "set")
    cache = tmp_path / "cache"
    lenient = load_rules(rules, skip_broken=True, cache_dir=str(cache))
    assert [Path(e.path).name for e in lenient.skipped] == ["bad_field.yar", "bad_identifier.yar", "bad_md5.yar"]
    with pytest.raises(RuleError, match="bad_"):
        load_rules(rules, cache_dir=str(cache))  # strict never takes the lenient set from the cache
    warm = load_rules(rules, skip_broken=True, cache_dir=str(cache))
    assert warm.cached and [(e.path, e.line, str(e)) for e in warm.skipped] == [(e.path, e.line, str(e)) for e in lenient.skipped]
