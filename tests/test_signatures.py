"""Starter packs: one generated test per rule, run on its samples; the tools around them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.scanning import Scanner, load_rules
from signatures import canary, template
from signatures.check import PACKS_DIR, RuleCase, check, collect, verify

CASES, LOAD_PROBLEMS = collect()


def test_starter_packs_compile() -> None:
    assert LOAD_PROBLEMS == []
    assert {c.pack for c in CASES} == {"canary", "confidentiality", "copyright", "credentials"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule_samples(case: RuleCase) -> None:
    assert case.positives, f"{case.name} has no positive samples"
    assert case.negatives, f"{case.name} has no negative samples"
    assert verify(case) == []


def test_a_rule_without_samples_fails_the_check(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    shutil.copytree(PACKS_DIR, packs)
    shutil.copytree(Path(PACKS_DIR).parent / "samples", tmp_path / "samples")
    with open(packs / "canary.yar", "a") as f:
        f.write('\nrule unproven { meta: severity = "low" category = "test" strings: $a = "unproven-marker" condition: $a }\n')
    problems = [str(p) for p in check(str(packs))]
    assert len(problems) == 2
    assert all(p.startswith(f"{packs / 'canary.yar'}:") for p in problems)
    assert any("no positive samples" in p for p in problems) and any("no negative samples" in p for p in problems)


def test_a_rule_that_misses_its_sample_fails_the_check(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    shutil.copytree(PACKS_DIR, packs)
    shutil.copytree(Path(PACKS_DIR).parent / "samples", tmp_path / "samples")
    negative = tmp_path / "samples" / "canary" / "canary_token" / "negative" / "planted.txt"
    negative.write_text(canary.new_token())
    (problem,) = check(str(packs))
    assert "fires on negative sample" in problem.message and str(negative) in problem.message


def test_check_command(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "signatures.cli", "check"], capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stdout
    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / "bad.yar").write_text("rule a {\n  condition: nope\n}\n")
    bad = subprocess.run([sys.executable, "-m", "signatures.cli", "check", str(packs)], capture_output=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stdout.decode().startswith(f"{packs / 'bad.yar'}:2: ")


def test_canary_tokens_match_the_rule() -> None:
    scanner = Scanner(load_rules(os.path.join(PACKS_DIR, "canary.yar")))
    tokens = {canary.new_token() for _ in range(20)}
    assert len(tokens) == 20
    for token in tokens:
        assert canary.TOKEN_PATTERN.fullmatch(token)
        assert scanner.scan_bytes(f"see {token} here".encode()).matched


@pytest.mark.parametrize("owner", ["Contoso Ltd", 'Weird "Quoted" \\ Owner'])
def test_copyright_template_renders_and_passes_its_samples(tmp_path: Path, owner: str) -> None:
    rule_file = tmp_path / "owner.yar"
    rule_file.write_text(template.render_copyright_rule(owner))
    scanner = Scanner(load_rules(rule_file))
    samples = Path(template.TEMPLATES_DIR) / "samples" / "copyright_owner"
    for kind, should_fire in (("positive", True), ("negative", False)):
        files = sorted((samples / kind).iterdir())
        assert files
        for sample in files:
            text = sample.read_text().replace("@OWNER@", owner)
            assert scanner.scan_bytes(text.encode()).matched is should_fire, (kind, sample.name)


@pytest.mark.parametrize("owner", ["", "ab", "bad\nname"])
def test_copyright_template_refuses_vague_owners(owner: str) -> None:
    with pytest.raises(ValueError):
        template.render_copyright_rule(owner)
