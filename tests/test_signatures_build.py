"""``dlp-signatures build``: packs built from a synthetic corpus catch copies and nothing else."""

from __future__ import annotations

import functools
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from agent.scanning import Scanner, load_rules
from agent.scanning.doctext import xml_to_text
from signatures import baseline, build
from signatures.corpus import normalise
from tests import factories

LICENSE_HEADER = [
    "# Licensed under the Apache License, Version 2.0 (the 'License');",
    "# you may not use this file except in compliance with the License.",
    "# distributed under the License is distributed on an 'AS IS' BASIS,",
]
COMMON_LINES = [
    "from typing import Any, Callable, Iterator",
    "logger = logging.getLogger(__name__)",
    'raise NotImplementedError("subclasses must implement this")',
    'if __name__ == "__main__":',
]


def vocabulary(seed: int, size: int = 400) -> list[str]:
    """Identifier-like words, different for every seed (as two companies' code would be)."""
    rng = random.Random(seed)
    return sorted({"".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(5, 9))) for _ in range(size)})


def python_source(rng: random.Random, words: list[str], functions: int = 14) -> str:
    """A module that reads like real code: a shared header, then functions of its own vocabulary."""
    w = functools.partial(rng.choice, words)
    out = [*LICENSE_HEADER, "", "import logging", "import os", COMMON_LINES[0], "", COMMON_LINES[1], ""]
    for _ in range(functions):
        name, arg, other, field = f"{w()}_{w()}", w(), w(), w()
        out += [
            "",
            f"def {name}({arg}, {other}_limit={rng.randint(2, 900)}):",
            f'    """{w().capitalize()} the {w()} {w()} of every {w()} before the {w()} closes."""',
            f"    {field}_rows = {arg}.{w()}_{w()}({other}_limit, strict={rng.choice(['True', 'False'])})",
            f"    if {field}_rows is None:",
            "        return None",
            f"    for {w()}_item in {field}_rows.{w()}_entries:",
            f"        {field}_total += {w()}_item.{w()}_amount * {rng.randint(2, 99)}",
            f'        logger.debug("{w()} {w()} %s", {field}_total)',
            f"    return {w()}_{w()}({field}_total, {other}_limit)",
        ]
    out += ["", "", COMMON_LINES[3], f"    {w()}_{w()}(os.environ, {rng.randint(1, 50)})"]
    return "\n".join(out) + "\n"


def javascript_source(rng: random.Random, words: list[str], functions: int = 12) -> str:
    w = functools.partial(rng.choice, words)
    out = ["'use strict'", "", f"const {{ {w()}Client }} = require('./{w()}-client')", ""]
    for _ in range(functions):
        name, arg = f"{w()}{w().capitalize()}", w()
        out += [
            "",
            f"async function {name} ({arg}, options = {{}}) {{",
            f"  const {w()}Map = new Map(Object.entries({arg}.{w()}Index || {{}}))",
            f"  if (!{arg}.{w()}Ready) {{",
            f"    throw new Error('{w()} {w()} is not ready for {w()}')",
            "  }",
            f"  for (const [{w()}Key, {w()}Value] of {w()}Map) {{",
            f"    await {w()}Client.{w()}({w()}Key, {{ retries: {rng.randint(1, 9)}, {w()}: true }})",
            "  }",
            f"  return {{ {w()}: {arg}.{w()}Count + {rng.randint(1, 500)} }}",
            "}",
        ]
    out += ["", f"module.exports = {{ {w()}, {w()} }}"]
    return "\n".join(out) + "\n"


def prose(rng: random.Random, words: list[str], paragraphs: int) -> list[str]:
    w = functools.partial(rng.choice, words)
    return [
        f"The {w()} {w()} agreement with {w().capitalize()} covers {rng.randint(2, 90)} {w()} sites, "
        f"the {w()} of each {w()} and the {w()} schedule for {w()} {w()}."
        for _ in range(paragraphs)
    ]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A corpus (code, a docx, a PDF, files to skip), a baseline folder and unrelated code."""
    root = tmp_path_factory.mktemp("build")
    corpus, base, other = root / "acme", root / "baseline", root / "other"
    rng = random.Random(11)
    words = vocabulary(1)
    (corpus / "billing").mkdir(parents=True)
    (corpus / "web").mkdir()
    for i in range(8):
        (corpus / "billing" / f"ledger_{i}.py").write_text(python_source(rng, words))
    for i in range(4):
        (corpus / "web" / f"portal_{i}.js").write_text(javascript_source(rng, words))
    quirks = [
        f'{w}_SHARE = "\\\\\\\\fileserver\\\\{w}\\\\exports"  # backslashes survive escaping' for w in words[:6]
    ] + [f"{w.upper()}_LABEL = 'Crème brûlée café {w} übernehmen \"quoted\"'" for w in words[6:12]]
    (corpus / "billing" / "quirks.py").write_text("\n".join(quirks) + "\n", encoding="utf-8")
    (corpus / "contract.docx").write_bytes(factories.docx_bytes([[p[:40], p[40:]] for p in prose(rng, words, 12)]))
    (corpus / "terms.pdf").write_bytes(factories.pdf_bytes([p[:90] for p in prose(rng, words, 14)]))
    (corpus / "logo.bin").write_bytes(bytes(range(256)) * 4)
    (corpus / "empty.py").write_text("\n\n")
    (corpus / "dump.sql").write_text("-- huge export\n" + "INSERT INTO t VALUES (1);\n" * 4000)

    base.mkdir()
    base_words = vocabulary(2)
    for i in range(3):
        (base / f"common_{i}.py").write_text(python_source(rng, base_words) + "\n".join(COMMON_LINES) + "\n")
    # Lines of a corpus file that also live in the baseline: they must never become strings.
    borrowed = (corpus / "billing" / "ledger_0.py").read_text().splitlines()[40:60]
    (base / "borrowed.py").write_text("\n".join(borrowed) + "\n")

    other.mkdir()
    other_words = vocabulary(3)
    for i in range(6):
        (other / f"unrelated_{i}.py").write_text(python_source(rng, other_words))
        (other / f"unrelated_{i}.js").write_text(javascript_source(rng, other_words))
    return {"corpus": corpus, "baseline": base, "other": other, "root": root}


@pytest.fixture(scope="module")
def built(tree: dict[str, Path]) -> build.Report:
    return build.build_pack(
        [str(tree["corpus"])],
        name="acme",
        out=str(tree["root"] / "acme.yar"),
        baseline_roots=[str(tree["baseline"])],
        max_file_bytes=50_000,
        measure_seconds=0.05,
    )


def pack_strings(path: str) -> list[bytes]:
    """The literal strings of a built pack, unescaped."""
    text = Path(path).read_text(encoding="ascii")
    found = re.findall(r'^\s+\$s\d+ = "((?:[^"\\]|\\.)*)"(?: ascii wide)?$', text, re.M)
    return [re.sub(rb"\\(x[0-9a-f]{2}|.)", _unescape, s.encode()) for s in found]


def _unescape(m: re.Match[bytes]) -> bytes:
    escape = m.group(1)
    return bytes([int(escape[1:], 16)]) if escape.startswith(b"x") and len(escape) == 3 else escape


def corpus_files(tree: dict[str, Path]) -> list[Path]:
    return sorted(p for p in tree["corpus"].rglob("*") if p.suffix in (".py", ".js", ".docx", ".pdf") and p.stat().st_size > 10)


def test_pack_compiles_and_every_corpus_file_fires(tree: dict[str, Path], built: build.Report) -> None:
    scanner = Scanner(load_rules(built.out))
    for path in corpus_files(tree):
        result = scanner.scan_path(str(path))
        assert result.matches, f"{path.name} not detected"
        match = result.matches[0]
        assert match.severity == "high"
        expected = "document" if path.suffix in (".docx", ".pdf") else "source_code"
        assert match.category == expected, path.name
    assert built.uncovered == []
    assert all('corpus = "acme"' in block for block in Path(built.out).read_text().split("\nrule ")[1:])


def test_an_excerpt_reindented_among_other_text_fires(tree: dict[str, Path], built: build.Report) -> None:
    scanner = Scanner(load_rules(built.out))
    unrelated = (tree["other"] / "unrelated_0.py").read_text().splitlines()
    for name in ("billing/ledger_3.py", "web/portal_2.js"):
        lines = (tree["corpus"] / name).read_text().splitlines()
        excerpt = ["\t\t" + line.strip() for line in lines[70:120]]
        copied = "\r\n".join(unrelated[:30] + excerpt + unrelated[30:60]).encode()
        result = scanner.scan_bytes(copied)
        stem = Path(name).stem
        assert any(m.rule.endswith(stem + "_" + Path(name).suffix[1:]) for m in result.matches), name


def test_a_utf16_copy_fires_on_its_own_bytes(tree: dict[str, Path], built: build.Report) -> None:
    """Strings are ``ascii wide``: a copy saved as UTF-16LE matches without any decoding."""
    scanner = Scanner(load_rules(built.out))
    lines = (tree["corpus"] / "billing/ledger_3.py").read_text().splitlines()
    wide = "\r\n".join(lines[70:120]).encode("utf-16-le")
    assert any(m.member is None and m.rule.endswith("ledger_3_py") for m in scanner.scan_bytes(wide).matches)


def test_copied_paragraphs_of_a_document_fire(tree: dict[str, Path], built: build.Report) -> None:
    scanner = Scanner(load_rules(built.out))
    text = docx_paragraphs(tree["corpus"] / "contract.docx")
    pasted = "Forwarded message:\n\n" + "\n\n".join(text[3:11]) + "\n"
    assert scanner.scan_bytes(pasted.encode()).matches


def docx_paragraphs(path: Path) -> list[str]:
    """The paragraphs of a docx as the agent extracts them."""
    with zipfile.ZipFile(path) as z:
        return [line for line in xml_to_text(z.read("word/document.xml")).decode().splitlines() if line]


def test_baseline_and_unrelated_code_do_not_fire(tree: dict[str, Path], built: build.Report) -> None:
    scanner = Scanner(load_rules(built.out))
    for path in sorted([*tree["baseline"].iterdir(), *tree["other"].iterdir()]):
        assert not scanner.scan_path(str(path)).matches, path.name


def test_baseline_lines_never_become_strings(tree: dict[str, Path], built: build.Report) -> None:
    strings = pack_strings(built.out)
    assert strings
    common = {line for path in tree["baseline"].iterdir() for line in normalise(path.read_bytes())}
    assert not common & set(strings)
    assert not any(s.startswith((b"Licensed", b"from typing")) for s in strings)
    assert built.baseline is not None and len(built.baseline.present) >= 15


def test_any_bytes_survive_escaping(tmp_path: Path) -> None:
    samples = [b'C:\\Users\\"quoted"\\share', "Crème brûlée café übernehmen".encode(), b"tab\there", bytes(range(256))]
    pack = tmp_path / "escapes.yar"
    pack.write_text(
        "\n".join(f'rule r{i} {{ strings: $a = "{build.yara_text(s)}" condition: $a }}' for i, s in enumerate(samples)),
        encoding="ascii",
    )
    scanner = Scanner(load_rules(pack))
    for i, sample in enumerate(samples):
        assert [m.rule for m in scanner.scan_bytes(b"before " + sample + b" after").matches] == [f"r{i}"]


def test_a_file_of_quirky_lines_is_detected(tree: dict[str, Path], built: build.Report) -> None:
    strings = pack_strings(built.out)
    assert any(b"\\" in s or b'"' in s or any(b > 0x7F for b in s) for s in strings)
    assert Scanner(load_rules(built.out)).scan_path(str(tree["corpus"] / "billing" / "quirks.py")).matches


def test_max_strings_is_respected_and_whole_files_still_fire(tree: dict[str, Path]) -> None:
    out = tree["root"] / "small.yar"
    report = build.build_pack(
        [str(tree["corpus"])], name="acme", out=str(out), baseline_roots=[str(tree["baseline"])], max_strings=40, measure_seconds=0
    )
    assert len(pack_strings(str(out))) == report.strings <= 40
    assert any("may be missed" in line for line in report.summary())
    scanner = Scanner(load_rules(out))
    assert all(scanner.scan_path(str(p)).matches for p in corpus_files(tree))


def test_fewer_strings_than_two_per_file_cover_what_fits(tree: dict[str, Path]) -> None:
    out = tree["root"] / "tiny.yar"
    report = build.build_pack([str(tree["corpus"])], name="acme", out=str(out), max_strings=5, measure_seconds=0)
    assert report.strings <= 5 and report.uncovered
    load_rules(out)


def test_skipped_files_are_reported(built: build.Report) -> None:
    reasons = {s.path: s.reason for s in built.corpus.skipped}
    assert reasons["acme/logo.bin"] == "binary"
    assert reasons["acme/empty.py"] == "empty"
    assert reasons["acme/dump.sql"].startswith("larger than")
    summary = "\n".join(built.summary())
    assert "skipped: 3 files (1 binary, 1 empty, 1 larger than 50,000 bytes)" in summary


def test_yara_atom_is_the_window_libyara_prefers() -> None:
    assert baseline.yara_atom(b"self._cache[key] = value") == b"lf._"
    assert baseline.yara_atom(b"return total(x, 42)") == b"l(x,"
    assert baseline.yara_atom(b"abcdefgh") == b"abcd"


def run_cli(*args: str, seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    return subprocess.run(
        [sys.executable, "-m", "signatures.cli", "build", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_cli_output_is_deterministic_and_summarised(tree: dict[str, Path]) -> None:
    outs = []
    for seed in ("1", "2"):
        out = tree["root"] / f"cli-{seed}.yar"
        done = run_cli(
            str(tree["corpus"]), "--name", "Acme Corp", "--out", str(out), "--baseline", str(tree["baseline"]),
            "--no-default-baseline", "--severity", "critical", "--max-file-mb", "0.05", seed=seed,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert b'severity = "critical"' in outs[0] and b"rule acme_corp_00000_" in outs[0]
    summary = done.stdout
    for expected in ("corpus: 15 files read", "skipped: 3 files", "baseline: 4 files", "rules,", "strings (max 8,000)",
                     "expected scan speed:", "MB/s", f"wrote {out}"):  # fmt: skip
        assert expected in summary, expected


def test_cli_exit_codes(tree: dict[str, Path]) -> None:
    missing = run_cli(str(tree["root"] / "nope"), "--name", "x", "--out", str(tree["root"] / "x.yar"), "--no-default-baseline")
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    shutil.copytree(tree["baseline"], tree["root"] / "copy-of-baseline")
    nothing = run_cli(
        str(tree["root"] / "copy-of-baseline"), "--name", "x", "--out", str(tree["root"] / "x.yar"),
        "--no-default-baseline", "--baseline", str(tree["baseline"]),
    )  # fmt: skip
    assert nothing.returncode == 1 and "nothing to build" in nothing.stderr
    assert not (tree["root"] / "x.yar").exists()
    bad = run_cli(str(tree["corpus"]), "--name", "x", "--out", str(tree["root"] / "x.yar"), "--max-strings", "0")
    assert bad.returncode == 2
    no_baseline = run_cli(str(tree["corpus"]), "--name", "x", "--out", str(tree["root"] / "x.yar"), "--baseline", "/nonexistent")
    assert no_baseline.returncode == 2 and "/nonexistent" in no_baseline.stderr


def test_default_baseline_leaves_out_the_standard_library(tmp_path: Path) -> None:
    corpus = tmp_path / "tiny"
    corpus.mkdir()
    (corpus / "ours.py").write_text(python_source(random.Random(5), vocabulary(9)))
    shutil.copy(textwrap.__file__, corpus / "vendored_textwrap.py")
    out = tmp_path / "tiny.yar"
    report = build.build_pack([str(corpus)], name="tiny", out=str(out), baseline_roots=baseline.default_roots(), measure_seconds=0)
    assert report.baseline is not None and report.baseline.lines > 100_000
    stdlib_lines = set(normalise(Path(textwrap.__file__).read_bytes()))
    assert not stdlib_lines & set(pack_strings(str(out)))
    scanner = Scanner(load_rules(out))
    assert scanner.scan_path(str(corpus / "ours.py")).matches
    assert not scanner.scan_path(textwrap.__file__).matches
