"""Loading rule packs: namespaces, versions, compiled bundles, errors with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.scanning import RuleError, Scanner, load_rules
from agent.scanning.rules import DEFAULT_CATEGORY, DEFAULT_SEVERITY


def test_directory_gives_one_namespace_per_file(rules_dir: Path) -> None:
    ruleset = load_rules(rules_dir)
    assert ruleset.namespaces == ("markings", "testpack")
    assert ruleset.rule_count == 2
    assert len(ruleset.version) == 16


def test_nested_directories_give_dotted_namespaces(tmp_path: Path) -> None:
    (tmp_path / "vendor" / "acme").mkdir(parents=True)
    (tmp_path / "vendor" / "acme" / "core.yar").write_text('rule r { strings: $a = "abc" condition: $a }')
    ruleset = load_rules(tmp_path)
    assert ruleset.namespaces == ("vendor.acme.core",)
    assert Scanner(ruleset).scan_bytes(b"xxabcxx").matches[0].namespace == "vendor.acme.core"


def test_version_follows_content(rules_dir: Path) -> None:
    before = load_rules(rules_dir).version
    assert load_rules(rules_dir).version == before
    (rules_dir / "extra.yar").write_text("rule extra { condition: false }")
    assert load_rules(rules_dir).version != before


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yar"
    bad.write_text("rule ok { condition: true }\n\nrule broken {\n  condition: nosuchthing\n}\n")
    with pytest.raises(RuleError) as caught:
        load_rules(tmp_path)
    assert caught.value.path == str(bad)
    assert caught.value.line == 4
    assert str(caught.value).startswith(f"{bad}:4: ")
    assert "nosuchthing" in str(caught.value)


def test_empty_and_missing_locations_are_errors(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="no .yar"):
        load_rules(tmp_path)
    with pytest.raises(RuleError, match="not found"):
        load_rules(tmp_path / "absent")


def test_compiled_rules_load(rules_dir: Path, tmp_path: Path) -> None:
    compiled = tmp_path / "bundle.yarc"
    load_rules(rules_dir).rules.save(str(compiled))
    ruleset = load_rules(compiled)
    assert ruleset.rule_count == 2
    assert Scanner(ruleset).scan_bytes(b"ZEBRAFISH-PAYLOAD-7741").matched


def test_garbage_with_compiled_magic_is_an_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.yarc"
    fake.write_bytes(b"YARA" + b"\x00" * 64)
    with pytest.raises(RuleError, match="compiled"):
        load_rules(fake)


def test_missing_or_invalid_meta_gets_defaults(tmp_path: Path) -> None:
    (tmp_path / "m.yar").write_text(
        'rule bare { strings: $a = "needle-one" condition: $a }\n'
        'rule odd { meta: severity = "apocalyptic" category = "secret" strings: $a = "needle-two" condition: $a }\n'
    )
    result = Scanner(load_rules(tmp_path)).scan_bytes(b"needle-one needle-two")
    by_rule = {m.rule: m for m in result.matches}
    assert (by_rule["bare"].severity, by_rule["bare"].category) == (DEFAULT_SEVERITY, DEFAULT_CATEGORY)
    assert (by_rule["odd"].severity, by_rule["odd"].category) == (DEFAULT_SEVERITY, "secret")
